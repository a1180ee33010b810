package model

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Path
		str  string
	}{
		{"", Path{}, "/"},
		{"/", Path{}, "/"},
		{"/3", NewPath(3), "/3"},
		{"3/0/1", NewPath(3, 0, 1), "/3/0/1"},
		{"/3/0/1/", NewPath(3, 0, 1), "/3/0/1"},
		{"/5/0/1/7", NewPath(5, 0, 1, 7), "/5/0/1/7"},
		{"/65534/0", NewPath(MaxID, 0), "/65534/0"},
	} {
		p, err := ParsePath(tc.in)
		if err != nil {
			t.Errorf("ParsePath(%q): %v", tc.in, err)
			continue
		}
		if p != tc.want {
			t.Errorf("ParsePath(%q) = %v, want %v", tc.in, p, tc.want)
		}
		if got := p.String(); got != tc.str {
			t.Errorf("ParsePath(%q).String() = %q, want %q", tc.in, got, tc.str)
		}
		if back, err := FromSegments(p.Segments()); err != nil || back != p {
			t.Errorf("FromSegments(%q) = %v, %v; want %v", p.Segments(), back, err, p)
		}
	}
}

func TestParsePathRejects(t *testing.T) {
	for _, in := range []string{
		"/1/2/3/4/5", // five levels
		"/65535",     // reserved (MAX_ID)
		"/70000",
		"/-1",
		"/a",
		"/3//1",
		"/03", // leading zero
		"/3/0x1",
		"/ 3",
	} {
		if p, err := ParsePath(in); !errors.Is(err, ErrPath) {
			t.Errorf("ParsePath(%q) = %v, %v; want ErrPath", in, p, err)
		}
	}
}

func TestPathLevels(t *testing.T) {
	p := NewPath(5, 1, 3, 9)
	if p.Len() != 4 || p.Object() != 5 || p.Instance() != 1 || p.Resource() != 3 || p.ResourceInstance() != 9 {
		t.Errorf("levels of %v: len %d %d/%d/%d/%d", p, p.Len(), p.Object(), p.Instance(), p.Resource(), p.ResourceInstance())
	}
	for i, want := range []uint16{5, 1, 3, 9} {
		if got := p.ID(i); got != want {
			t.Errorf("ID(%d) = %d, want %d", i, got, want)
		}
	}
	if got := p.Segments(); !slices.Equal(got, []string{"5", "1", "3", "9"}) {
		t.Errorf("Segments = %q", got)
	}
	if got := p.Parent(); got != NewPath(5, 1, 3) {
		t.Errorf("Parent = %v", got)
	}
	if got := (Path{}).Parent(); got != (Path{}) {
		t.Errorf("root's Parent = %v", got)
	}
	if got := p.Truncate(2); got != NewPath(5, 1) {
		t.Errorf("Truncate(2) = %v", got)
	}
	if got := p.Truncate(6); got != p {
		t.Errorf("Truncate(6) = %v", got)
	}
	if got := NewPath(5).Append(0).Append(3); got != NewPath(5, 0, 3) {
		t.Errorf("Append = %v", got)
	}
	// A path built by Parent or Truncate compares equal to one parsed.
	if q, _ := ParsePath("/5/1"); p.Parent().Parent() != q {
		t.Errorf("Parent twice = %v, want %v", p.Parent().Parent(), q)
	}
}

func TestPathPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"NewPath five": func() { NewPath(1, 2, 3, 4, 5) },
		"Append fifth": func() { NewPath(1, 2, 3, 4).Append(5) },
		"ID past end":  func() { NewPath(1, 2).ID(2) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
}

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		p, q Path
		want bool
	}{
		{NewPath(5, 0, 3), NewPath(5, 0, 3), true},
		{NewPath(5, 0, 3), NewPath(5, 0), true},
		{NewPath(5, 0, 3), NewPath(5), true},
		{NewPath(5, 0, 3), Path{}, true},
		{Path{}, Path{}, true},
		{NewPath(5, 0), NewPath(5, 0, 3), false},
		{NewPath(5, 1, 3), NewPath(5, 0), false},
		{NewPath(3, 0, 3), NewPath(5), false},
		{Path{}, NewPath(5), false},
	} {
		if got := tc.p.Within(tc.q); got != tc.want {
			t.Errorf("%v.Within(%v) = %v, want %v", tc.p, tc.q, got, tc.want)
		}
	}
}

func TestTypeString(t *testing.T) {
	for ty, want := range map[Type]string{
		TypeNone: "none", TypeString: "string", TypeInteger: "integer", TypeUnsigned: "unsigned",
		TypeFloat: "float", TypeBoolean: "boolean", TypeOpaque: "opaque", TypeTime: "time",
		TypeObjlnk: "objlnk", TypeCorelnk: "corelnk", Type(200): "type(200)",
	} {
		if got := ty.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", ty, got, want)
		}
	}
}

func TestObjLink(t *testing.T) {
	l, err := ParseObjLink("3:0")
	if err != nil || l != (ObjLink{3, 0}) || l.String() != "3:0" {
		t.Errorf("ParseObjLink(3:0) = %v, %v", l, err)
	}
	for _, in := range []string{"", "3", "3:", ":0", "a:0", "3:70000", "-1:0"} {
		if l, err := ParseObjLink(in); !errors.Is(err, ErrType) {
			t.Errorf("ParseObjLink(%q) = %v, %v; want ErrType", in, l, err)
		}
	}
}

func TestValueString(t *testing.T) {
	for _, tc := range []struct {
		v    Value
		ty   Type
		want string
	}{
		{String("lwm2m"), TypeString, "lwm2m"},
		{Int(-42), TypeInteger, "-42"},
		{Uint(math.MaxUint64), TypeUnsigned, "18446744073709551615"},
		{Float(1.5), TypeFloat, "1.5"},
		{Bool(true), TypeBoolean, "1"},
		{Bool(false), TypeBoolean, "0"},
		{Opaque([]byte{1, 2, 3}), TypeOpaque, "<3 bytes>"},
		{Time(time.Unix(1700000000, 0)), TypeTime, "1700000000"},
		{Objlnk(3, 0), TypeObjlnk, "3:0"},
		{Corelnk("</5/0>"), TypeCorelnk, "</5/0>"},
		{Value{}, TypeNone, ""},
	} {
		if tc.v.Type != tc.ty {
			t.Errorf("%v has type %v, want %v", tc.v, tc.v.Type, tc.ty)
		}
		if got := tc.v.String(); got != tc.want {
			t.Errorf("%v String() = %q, want %q", tc.ty, got, tc.want)
		}
	}
	if got := Time(time.Unix(1700000000, 999)).Time(); !got.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("Time round trip = %v (seconds only)", got)
	}
}

func TestValueEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b Value
		want bool
	}{
		{String("a"), String("a"), true},
		{String("a"), String("b"), false},
		{String("a"), Corelnk("a"), false}, // same field, other type
		{Int(1), Int(1), true},
		{Int(1), Uint(1), false},
		{Int(1), Value{Type: TypeTime, Int: 1}, false},
		{Uint(7), Uint(7), true},
		{Float(math.NaN()), Float(math.NaN()), true},
		{Float(0.1), Float(0.2), false},
		{Bool(true), Bool(true), true},
		{Bool(true), Bool(false), false},
		{Opaque([]byte("x")), Opaque([]byte("x")), true},
		{Opaque(nil), Opaque([]byte{}), true},
		{Opaque([]byte("x")), Opaque([]byte("y")), false},
		{Objlnk(3, 0), Objlnk(3, 0), true},
		{Objlnk(3, 0), Objlnk(3, 1), false},
		// Only the field the type selects counts.
		{Value{Type: TypeString, Str: "a", Int: 1}, String("a"), true},
		{Value{}, Value{}, true},
	} {
		if got := tc.a.Equal(tc.b); got != tc.want {
			t.Errorf("%#v.Equal(%#v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestValueNumber(t *testing.T) {
	for _, tc := range []struct {
		v    Value
		want float64
		ok   bool
	}{
		{Int(-3), -3, true},
		{Time(time.Unix(10, 0)), 10, true},
		{Uint(4), 4, true},
		{Float(2.5), 2.5, true},
		{String("1"), 0, false},
		{Bool(true), 0, false},
	} {
		if got, ok := tc.v.Number(); got != tc.want || ok != tc.ok {
			t.Errorf("%v Number() = %v, %v; want %v, %v", tc.v.Type, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValueConvert(t *testing.T) {
	for _, tc := range []struct {
		v    Value
		to   Type
		want Value
	}{
		{Int(5), TypeInteger, Int(5)},
		{Uint(5), TypeInteger, Int(5)},
		{Float(-5), TypeInteger, Int(-5)},
		{Int(5), TypeTime, Value{Type: TypeTime, Int: 5}},
		{Value{Type: TypeTime, Int: 5}, TypeInteger, Int(5)},
		{Int(5), TypeUnsigned, Uint(5)},
		{Float(5), TypeUnsigned, Uint(5)},
		{Int(-5), TypeFloat, Float(-5)},
		{Uint(5), TypeFloat, Float(5)},
		{Corelnk("</1>"), TypeString, String("</1>")},
		{String("</1>"), TypeCorelnk, Corelnk("</1>")},
		{String("3:0"), TypeObjlnk, Objlnk(3, 0)},
	} {
		got, err := tc.v.Convert(tc.to)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%v(%v).Convert(%v) = %v, %v; want %v", tc.v.Type, tc.v, tc.to, got, err, tc.want)
		}
	}
}

func TestValueConvertRejects(t *testing.T) {
	for _, tc := range []struct {
		v  Value
		to Type
	}{
		{Uint(math.MaxInt64 + 1), TypeInteger},
		{Float(1.5), TypeInteger},
		{Float(1 << 63), TypeInteger},
		{Int(-1), TypeUnsigned},
		{Float(-1), TypeUnsigned},
		{Float(0.5), TypeUnsigned},
		{Float(1 << 64), TypeUnsigned},
		{String("1"), TypeInteger},
		{Bool(true), TypeInteger},
		{Int(1), TypeString},
		{String("3"), TypeObjlnk},
		{Opaque([]byte("x")), TypeString},
		{Int(1), TypeBoolean},
	} {
		if got, err := tc.v.Convert(tc.to); !errors.Is(err, ErrType) {
			t.Errorf("%v(%v).Convert(%v) = %v, %v; want ErrType", tc.v.Type, tc.v, tc.to, got, err)
		}
	}
}

func TestRecordEqual(t *testing.T) {
	r := Record{Path: NewPath(3, 0, 0), Value: String("acme")}
	for _, tc := range []struct {
		s    Record
		want bool
	}{
		{Record{Path: NewPath(3, 0, 0), Value: String("acme")}, true},
		{Record{Path: NewPath(3, 0, 1), Value: String("acme")}, false},
		{Record{Path: NewPath(3, 0, 0), Value: String("other")}, false},
		{Record{Path: NewPath(3, 0, 0), Value: Corelnk("acme")}, false},
	} {
		if got := r.Equal(tc.s); got != tc.want {
			t.Errorf("Equal(%v %v) = %v, want %v", tc.s.Path, tc.s.Value, got, tc.want)
		}
	}
}

package text

import (
	"errors"
	"math"
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

func TestEncode(t *testing.T) {
	cases := []struct {
		v    model.Value
		want string
	}{
		// LwM2M 1.1 Core §7.4.1: a read of /3/0/0 returns the manufacturer.
		{model.String("Open Mobile Alliance"), "Open Mobile Alliance"},
		{model.Int(-42), "-42"},
		{model.Uint(math.MaxUint64), "18446744073709551615"},
		{model.Float(3.5), "3.5"},
		{model.Float(1e21), "1e+21"},
		{model.Bool(true), "1"},
		{model.Bool(false), "0"},
		{model.Value{Type: model.TypeTime, Int: 1367491215}, "1367491215"},
		{model.Objlnk(3, 0), "3:0"},
		{model.Opaque([]byte("hello")), "aGVsbG8="},
		{model.Corelnk("</3/0>"), "</3/0>"},
		{model.Value{}, ""},
	}
	for _, c := range cases {
		if got := string(Encode(c.v)); got != c.want {
			t.Errorf("Encode(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	vals := []model.Value{
		model.String(""), model.String("héllo, wörld"), model.Corelnk("</1/0>;ver=1.1"),
		model.Int(0), model.Int(math.MinInt64), model.Int(math.MaxInt64),
		model.Uint(0), model.Uint(math.MaxUint64),
		model.Float(0.1), model.Float(-2.5e-300), model.Float(float64(float32(1.1))),
		model.Float(math.Inf(1)), model.Float(math.Inf(-1)), model.Float(math.NaN()),
		model.Bool(true), model.Bool(false),
		model.Value{Type: model.TypeTime, Int: -1},
		model.Objlnk(65534, 65534),
		model.Opaque(nil), model.Opaque([]byte{0, 0xff, 0x10}),
	}
	for _, v := range vals {
		got, err := Decode(Encode(v), v.Type)
		if err != nil {
			t.Errorf("%s %v: %v", v.Type, v, err)
			continue
		}
		if !got.Equal(v) {
			t.Errorf("%s: round trip %v -> %v", v.Type, v, got)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	cases := []struct {
		in string
		t  model.Type
	}{
		{"", model.TypeInteger},
		{" 1", model.TypeInteger},
		{"1 ", model.TypeInteger},
		{"0x10", model.TypeInteger},
		{"1_000", model.TypeInteger},
		{"9223372036854775808", model.TypeInteger},
		{"-1", model.TypeUnsigned},
		{"18446744073709551616", model.TypeUnsigned},
		{"1.5", model.TypeTime},
		{"inf", model.TypeFloat},
		{"0x1p3", model.TypeFloat},
		{".", model.TypeFloat},
		{"1e", model.TypeFloat},
		{"true", model.TypeBoolean},
		{"2", model.TypeBoolean},
		{"3", model.TypeObjlnk},
		{"3:70000", model.TypeObjlnk},
		{"+3:0", model.TypeObjlnk},
		{"aGVsbG8", model.TypeOpaque}, // missing padding
		{"a b=", model.TypeOpaque},
		{"\xff", model.TypeString},
		{"x", model.TypeNone},
		{"x", model.Type(99)},
	}
	for _, c := range cases {
		if v, err := Decode([]byte(c.in), c.t); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q, %s) = %v, %v; want ErrMalformed", c.in, c.t, v, err)
		}
	}
}

func TestDecodeFloatForms(t *testing.T) {
	for in, want := range map[string]float64{"1": 1, "-1.5": -1.5, ".5": 0.5, "5.": 5, "1E3": 1000, "+2e-1": 0.2} {
		v, err := Decode([]byte(in), model.TypeFloat)
		if err != nil || v.Float != want {
			t.Errorf("Decode(%q) = %v, %v; want %v", in, v, err, want)
		}
	}
}

// FuzzDecode checks that Decode never panics and that Encode gives back a
// payload that decodes to the same value.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("123"), uint8(model.TypeInteger))
	f.Add([]byte("-1.25e3"), uint8(model.TypeFloat))
	f.Add([]byte("aGVsbG8="), uint8(model.TypeOpaque))
	f.Add([]byte("3:0"), uint8(model.TypeObjlnk))
	f.Add([]byte("1"), uint8(model.TypeBoolean))
	f.Fuzz(func(t *testing.T, data []byte, tt uint8) {
		typ := model.Type(tt % 11)
		v, err := Decode(data, typ)
		if err != nil {
			return
		}
		again, err := Decode(Encode(v), typ)
		if err != nil {
			t.Fatalf("Decode(Encode(%v)) = %v", v, err)
		}
		if !again.Equal(v) {
			t.Fatalf("round trip %v -> %v", v, again)
		}
	})
}

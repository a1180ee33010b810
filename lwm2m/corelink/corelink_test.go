package corelink

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// The Register payload of LwM2M 1.1 Core §6.2.7 / Table 6.2.1-1 style:
// an rt on the root link, versions, and instances.
const registerPayload = `</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>,</5>;ver=1.1,</5/0>`

var registerLinks = []Link{
	{Target: "/", Params: []Param{{"rt", "oma.lwm2m"}, {"ct", "11543"}}},
	{Target: "/1/0"},
	{Target: "/3/0"},
	{Target: "/5", Params: []Param{{"ver", "1.1"}}},
	{Target: "/5/0"},
}

func TestRegisterPayload(t *testing.T) {
	if got := string(Encode(registerLinks)); got != registerPayload {
		t.Fatalf("Encode = %s\nwant %s", got, registerPayload)
	}
	got, err := Parse([]byte(registerPayload))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, registerLinks) {
		t.Fatalf("Parse = %#v", got)
	}
}

// A Discover answer on /3 (LwM2M 1.1 Core §5.4.2 examples), with
// attributes and a value-less parameter.
func TestDiscoverPayload(t *testing.T) {
	in := `</3>;pmin=10, </3/0>;obs,</3/0/1>, </3/0/6>;dim=2 ,</3/0/7>;gt="50.0";lt=42.2;st=0.5`
	got, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Link{
		{Target: "/3", Params: []Param{{"pmin", "10"}}},
		{Target: "/3/0", Params: []Param{{"obs", ""}}},
		{Target: "/3/0/1"},
		{Target: "/3/0/6", Params: []Param{{"dim", "2"}}},
		{Target: "/3/0/7", Params: []Param{{"gt", "50.0"}, {"lt", "42.2"}, {"st", "0.5"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse = %#v", got)
	}
	if v, ok := got[4].Get("lt"); !ok || v != "42.2" {
		t.Fatalf("Get(lt) = %q, %v", v, ok)
	}
	if _, ok := got[4].Get("pmax"); ok {
		t.Fatal("Get(pmax) found")
	}
}

func TestQuoting(t *testing.T) {
	links := []Link{{Target: "/a,b;c", Params: []Param{
		{"title", `say "hi", ok; \o/`},
		{"if", "core.b"},
		{"anchor", "</x>"},
		{"sz", "1024"},
		{"ct", "0 40"},
	}}}
	enc := string(Encode(links))
	want := `</a,b;c>;title="say \"hi\", ok; \\o/";if=core.b;anchor="</x>";sz=1024;ct="0 40"`
	if enc != want {
		t.Fatalf("Encode = %s\nwant %s", enc, want)
	}
	got, err := Parse([]byte(enc))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, links) {
		t.Fatalf("round trip = %#v", got)
	}
	if s := Encode([]Link{{Target: "/a>b"}}); string(s) != "</a%3Eb>" {
		t.Fatalf("target escaping: %s", s)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "  \n"} {
		if got, err := Parse([]byte(in)); err != nil || len(got) != 0 {
			t.Errorf("Parse(%q) = %v, %v", in, got, err)
		}
	}
}

func TestParseMalformed(t *testing.T) {
	cases := []string{
		`/3/0`,
		`</3/0`,
		`</3/0>,`,
		`</3/0>,,</3/1>`,
		`</3/0> </3/1>`,
		`</3/0>;`,
		`</3/0>;=1`,
		`</3/0>;a=`,
		`</3/0>;a="open`,
		`</3/0>;a="esc\`,
		`</3/0>;a=b"c"`,
		`</3/0>x`,
		`</3/0>;ver=1.1;` + "\x00",
		"</3/0>" + strings.Repeat(";a", MaxParams+1),
		strings.Repeat("<>,", MaxLinks) + "<>",
	}
	for _, in := range cases {
		if got, err := Parse([]byte(in)); !errors.Is(err, ErrMalformed) {
			name := in
			if len(name) > 40 {
				name = name[:40]
			}
			t.Errorf("Parse(%q) = %v, %v; want ErrMalformed", name, got, err)
		}
	}
}

// FuzzParse checks that Parse never panics and that Encode writes back
// links that parse to the same value.
func FuzzParse(f *testing.F) {
	f.Add([]byte(registerPayload))
	f.Add([]byte(`</3/0/7>;gt="50.0";lt=42.2, </3/0>;obs`))
	f.Add([]byte(`<>;title="a\"b,c;d"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		links, err := Parse(data)
		if err != nil {
			return
		}
		enc := Encode(links)
		again, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(Encode) = %v for %q", err, enc)
		}
		if len(links) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(links, again) {
			t.Fatalf("round trip:\n%#v\n%#v", links, again)
		}
	})
}

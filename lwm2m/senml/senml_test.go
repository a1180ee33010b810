package senml

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

func deviceTypes(p model.Path) (model.Type, bool) {
	if p.Object() != 3 {
		return 0, false
	}
	switch p.Resource() {
	case 0, 1, 2, 3, 14, 15, 16:
		return model.TypeString, true
	case 6, 7, 8, 9, 10, 11:
		return model.TypeInteger, true
	case 13:
		return model.TypeTime, true
	}
	return 0, false
}

func rec(path string, v model.Value) model.Record {
	p, err := model.ParsePath(path)
	if err != nil {
		panic(err)
	}
	return model.Record{Path: p, Value: v}
}

func equalRecords(a, b []model.Record) bool { return slices.EqualFunc(a, b, model.Record.Equal) }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var deviceRecords = []model.Record{
	rec("/3/0/0", model.String("Open Mobile Alliance")),
	rec("/3/0/1", model.String("Lightweight M2M Client")),
	rec("/3/0/2", model.String("345000123")),
	rec("/3/0/3", model.String("1.0")),
	rec("/3/0/6/0", model.Int(1)),
	rec("/3/0/6/1", model.Int(5)),
	rec("/3/0/7/0", model.Int(3800)),
	rec("/3/0/7/1", model.Int(5000)),
	rec("/3/0/8/0", model.Int(125)),
	rec("/3/0/8/1", model.Int(900)),
	rec("/3/0/9", model.Int(100)),
	rec("/3/0/10", model.Int(15)),
	rec("/3/0/11/0", model.Int(0)),
	rec("/3/0/13", model.Value{Type: model.TypeTime, Int: 1367491215}),
	rec("/3/0/14", model.String("+02:00")),
	rec("/3/0/16", model.String("U")),
}

// The Device object instance read of LwM2M 1.1 Core §7.4.4 (SenML JSON),
// written without whitespace.
const deviceJSON = `[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},` +
	`{"n":"1","vs":"Lightweight M2M Client"},{"n":"2","vs":"345000123"},` +
	`{"n":"3","vs":"1.0"},{"n":"6/0","v":1},{"n":"6/1","v":5},` +
	`{"n":"7/0","v":3800},{"n":"7/1","v":5000},{"n":"8/0","v":125},` +
	`{"n":"8/1","v":900},{"n":"9","v":100},{"n":"10","v":15},` +
	`{"n":"11/0","v":0},{"n":"13","v":1367491215},{"n":"14","vs":"+02:00"},` +
	`{"n":"16","vs":"U"}]`

func TestDeviceExampleJSON(t *testing.T) {
	base := model.NewPath(3, 0)
	got, err := EncodeJSON(base, deviceRecords)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != deviceJSON {
		t.Fatalf("EncodeJSON:\n got %s\nwant %s", got, deviceJSON)
	}
	// The spec prints the example indented; whitespace must not matter.
	pretty := strings.ReplaceAll(deviceJSON, "},", "},\n  ")
	recs, err := DecodeJSON(base, []byte(pretty), deviceTypes)
	if err != nil {
		t.Fatal(err)
	}
	if !equalRecords(recs, deviceRecords) {
		t.Fatalf("DecodeJSON = %v", recs)
	}
	// Decoding against the object or the root works too.
	for _, b := range []model.Path{model.NewPath(3), {}} {
		if recs, err := DecodeJSON(b, []byte(deviceJSON), deviceTypes); err != nil || !equalRecords(recs, deviceRecords) {
			t.Fatalf("DecodeJSON(%s) = %v, %v", b, recs, err)
		}
	}
}

// The same read in SenML CBOR (§7.4.5): labels bn=-2 (0x21), n=0, v=2,
// vs=3. The hex is built from RFC 8949 encoding rules, record by record.
func deviceCBOR(t testing.TB) []byte {
	return unhex(t, `90
		A3 21 65 2F332F302F 00 61 30 03 74 4F70656E204D6F62696C6520416C6C69616E6365
		A2 00 61 31 03 76 4C69676874776569676874204D324D20436C69656E74
		A2 00 61 32 03 69 333435303030313233
		A2 00 61 33 03 63 312E30
		A2 00 63 362F30 02 01
		A2 00 63 362F31 02 05
		A2 00 63 372F30 02 19 0ED8
		A2 00 63 372F31 02 19 1388
		A2 00 63 382F30 02 18 7D
		A2 00 63 382F31 02 19 0384
		A2 00 61 39 02 18 64
		A2 00 62 3130 02 0F
		A2 00 64 31312F30 02 00
		A2 00 62 3133 02 1A 5182428F
		A2 00 62 3134 03 66 2B30323A3030
		A2 00 62 3136 03 61 55`)
}

func TestDeviceExampleCBOR(t *testing.T) {
	want := deviceCBOR(t)
	base := model.NewPath(3, 0)
	got, err := EncodeCBOR(base, deviceRecords)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("EncodeCBOR:\n got %X\nwant %X", got, want)
	}
	recs, err := DecodeCBOR(base, want, deviceTypes)
	if err != nil {
		t.Fatal(err)
	}
	if !equalRecords(recs, deviceRecords) {
		t.Fatalf("DecodeCBOR = %v", recs)
	}
}

func TestSingleResource(t *testing.T) {
	base := model.NewPath(3, 0, 0)
	got, err := EncodeJSON(base, deviceRecords[:1])
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"bn":"/3/0/0","vs":"Open Mobile Alliance"}]`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	multi, err := EncodeJSON(model.NewPath(3, 0, 7), deviceRecords[6:8])
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"bn":"/3/0/7/","n":"0","v":3800},{"n":"1","v":5000}]`; string(multi) != want {
		t.Fatalf("got %s, want %s", multi, want)
	}
}

type codec struct {
	name   string
	encode func(model.Path, []model.Record) ([]byte, error)
	decode func(model.Path, []byte, model.TypeResolver) ([]model.Record, error)
}

var codecs = []codec{{"JSON", EncodeJSON, DecodeJSON}, {"CBOR", EncodeCBOR, DecodeCBOR}}

func TestRoundTripTypes(t *testing.T) {
	vals := []model.Value{
		model.Int(0), model.Int(-1), model.Int(math.MinInt64), model.Int(math.MaxInt64),
		model.Uint(0), model.Uint(math.MaxUint64), model.Uint(1 << 63),
		model.Float(1.5), model.Float(float64(float32(0.1))), model.Float(0.1),
		model.Float(-1e300), model.Float(3), model.Float(5e-324),
		model.Bool(true), model.Bool(false),
		model.Value{Type: model.TypeTime, Int: 1700000000},
		model.String(""), model.String("ü \"quoted\" \\ \n\x01 </3/0>&"),
		model.Corelnk("</3/0>;ver=1.1"),
		model.Opaque(nil), model.Opaque([]byte{0xfb, 0xff, 0, 1}),
		model.Objlnk(3, 0), model.Objlnk(65534, 65534),
	}
	base := model.NewPath(9, 1)
	for _, c := range codecs {
		for _, v := range vals {
			r := model.Record{Path: model.NewPath(9, 1, 4, 2), Value: v}
			types := func(model.Path) (model.Type, bool) { return v.Type, true }
			b, err := c.encode(base, []model.Record{r})
			if err != nil {
				t.Errorf("%s %s %v: encode: %v", c.name, v.Type, v, err)
				continue
			}
			got, err := c.decode(base, b, types)
			if err != nil {
				t.Errorf("%s %s %v: decode %q: %v", c.name, v.Type, v, b, err)
				continue
			}
			if !equalRecords(got, []model.Record{r}) {
				t.Errorf("%s %s: round trip %v -> %v (%q)", c.name, v.Type, v, got, b)
			}
			// With no resolver the value keeps its wire kind; numbers keep
			// integer versus float.
			got, err = c.decode(base, b, nil)
			if err != nil {
				t.Errorf("%s untyped %v: %v", c.name, v, err)
				continue
			}
			if w := got[0].Value; w.Type == model.TypeFloat != (v.Type == model.TypeFloat) {
				t.Errorf("%s untyped %v decoded as %s", c.name, v, w.Type)
			}
		}
	}
}

func TestCBORNaN(t *testing.T) {
	r := rec("/1/0/1", model.Float(math.NaN()))
	b, err := EncodeCBOR(model.NewPath(1, 0), []model.Record{r})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCBOR(model.NewPath(1, 0), b, nil)
	if err != nil || !equalRecords(got, []model.Record{r}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := EncodeJSON(model.NewPath(1, 0), []model.Record{r}); err == nil {
		t.Fatal("JSON encoded NaN")
	}
}

func TestDecodeJSONExtras(t *testing.T) {
	// Time fields are accepted and ignored; base names carry over; vd
	// accepts padding; unknown fields are ignored.
	in := `[{"bn":"/3/0/","bt":1.5e9,"n":"0","vs":"x","t":-5,"foo":"bar"},` +
		`{"n":"9","v":1e2},{"bn":"/5/0/","n":"0","vd":"AQI="},{"n":"1","vlo":"3:0"},{"n":"2","vb":true}]`
	got, err := DecodeJSON(model.Path{}, []byte(in), func(p model.Path) (model.Type, bool) {
		if p.Object() == 3 && p.Resource() == 9 {
			return model.TypeInteger, true
		}
		return 0, false
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []model.Record{
		rec("/3/0/0", model.String("x")),
		rec("/3/0/9", model.Int(100)),
		rec("/5/0/0", model.Opaque([]byte{1, 2})),
		rec("/5/0/1", model.Objlnk(3, 0)),
		rec("/5/0/2", model.Bool(true)),
	}
	if !equalRecords(got, want) {
		t.Fatalf("got %v", got)
	}
}

func TestDecodeMalformedJSON(t *testing.T) {
	base := model.NewPath(3, 0)
	cases := map[string]string{
		"not json":          `[{"n":`,
		"not an array":      `{"bn":"/3/0/0","v":1}`,
		"empty":             ``,
		"null":              ` null`,
		"null record":       `[null]`,
		"deep nesting":      `[{"bn":"/3/0/","n":"9","v":[[[[[1]]]]]}]`,
		"very deep":         "[" + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "]",
		"outside base":      `[{"bn":"/3/1/","n":"9","v":1}]`,
		"other object":      `[{"n":"/4/0/9","v":1}]`,
		"not a resource":    `[{"bn":"/3/0","v":1}]`,
		"no leading slash":  `[{"bn":"3/0/","n":"9","v":1}]`,
		"bad path":          `[{"bn":"/3/0/","n":"x","v":1}]`,
		"five levels":       `[{"bn":"/3/0/","n":"6/0/1","v":1}]`,
		"no value":          `[{"bn":"/3/0/","n":"9"}]`,
		"two values":        `[{"bn":"/3/0/","n":"9","v":1,"vs":"1"}]`,
		"duplicate":         `[{"bn":"/3/0/","n":"9","v":1},{"n":"9","v":2}]`,
		"wrong type":        `[{"bn":"/3/0/","n":"9","vs":"1"}]`,
		"lossy conversion":  `[{"bn":"/3/0/","n":"9","v":1.5}]`,
		"v string":          `[{"bn":"/3/0/","n":"9","v":"1"}]`,
		"n number":          `[{"bn":"/3/0/","n":9,"v":1}]`,
		"bn null":           `[{"bn":null,"n":"/3/0/9","v":1}]`,
		"vb string":         `[{"bn":"/3/0/","n":"99","vb":"true"}]`,
		"vd bad base64":     `[{"bn":"/3/0/","n":"99","vd":"!!"}]`,
		"vd std alphabet":   `[{"bn":"/3/0/","n":"99","vd":"+/+/"}]`,
		"vlo bad":           `[{"bn":"/3/0/","n":"99","vlo":"3"}]`,
		"must-understand":   `[{"bn":"/3/0/","n":"99","v":1,"x_":1}]`,
		"base value":        `[{"bn":"/3/0/","bv":1,"n":"9","v":1}]`,
		"number overflow":   `[{"bn":"/3/0/","n":"99","v":1e999}]`,
		"time not a number": `[{"bn":"/3/0/","n":"99","v":1,"t":"now"}]`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeJSON(base, []byte(in), deviceTypes)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestDecodeMalformedCBOR(t *testing.T) {
	base := model.NewPath(3, 0)
	cases := map[string]string{
		"truncated":        "81 A2 21 65 2F332F30",
		"null":             "F6",
		"empty":            "",
		"not an array":     "A2 21 66 2F332F302F39 02 01",
		"huge length":      "9B FFFFFFFFFFFFFFFF",
		"huge string":      "81 A1 21 7B 7FFFFFFFFFFFFFFF",
		"deep nesting":     "81 A2 21 66 2F332F302F39 02 81 81 81 81 01",
		"extra data":       "80 00",
		"tag":              "81 A2 21 66 2F332F302F39 02 C1 01",
		"duplicate key":    "81 A3 21 66 2F332F302F39 02 01 02 02",
		"outside base":     "81 A2 21 66 2F332F312F39 02 01",
		"n not text":       "81 A2 00 09 02 01",
		"vd not bytes":     "81 A2 21 67 2F332F302F3939 08 61 41",
		"vb not bool":      "81 A2 21 67 2F332F302F3939 04 01",
		"vlo not string":   "81 A2 21 67 2F332F302F3939 63 766C6F 01",
		"v not number":     "81 A2 21 66 2F332F302F39 02 61 31",
		"invalid UTF-8":    "81 A2 21 66 2F332F302FFF 02 01",
		"must-understand":  "81 A3 21 66 2F332F302F39 02 01 62 785F 01",
		"sum":              "81 A3 21 66 2F332F302F39 02 01 05 01",
		"wrong value type": "81 A2 21 66 2F332F302F39 03 61 31",
		"too many pairs":   "81 B8 41" + strings.Repeat(" 01 01", 65),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeCBOR(base, unhex(t, in), deviceTypes)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := map[string][]model.Record{
		"outside":   {rec("/4/0/0", model.Int(1))},
		"instance":  {rec("/3/0", model.Int(1))},
		"duplicate": {rec("/3/0/9", model.Int(1)), rec("/3/0/9", model.Int(1))},
		"none":      {rec("/3/0/4", model.Value{})},
		"bad utf8":  {rec("/3/0/0", model.String("\xff"))},
	}
	for name, recs := range cases {
		for _, c := range codecs {
			if _, err := c.encode(model.NewPath(3, 0), recs); err == nil {
				t.Errorf("%s %s: no error", c.name, name)
			}
		}
	}
}

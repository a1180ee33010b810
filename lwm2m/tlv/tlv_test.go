package tlv

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

// deviceTypes resolves the Device object (/3) resources used in the
// LwM2M 1.1 Core examples, and the Access Control object (/2).
func deviceTypes(p model.Path) (model.Type, bool) {
	switch p.Object() {
	case 3:
		switch p.Resource() {
		case 0, 1, 2, 3, 14, 15, 16:
			return model.TypeString, true
		case 6, 7, 8, 9, 10, 11:
			return model.TypeInteger, true
		case 13:
			return model.TypeTime, true
		}
	case 2:
		return model.TypeInteger, true
	}
	return 0, false
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rec(path string, v model.Value) model.Record {
	p, err := model.ParsePath(path)
	if err != nil {
		panic(err)
	}
	return model.Record{Path: p, Value: v}
}

func equalRecords(a, b []model.Record) bool { return slices.EqualFunc(a, b, model.Record.Equal) }

// The Device object instance read of LwM2M 1.1 Core §7.4.3.2 (Table
// 7.4.3.2-1), built from the spec's resource table.
const deviceHex = `
C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
C8 02 09 33 34 35 30 30 30 31 32 33
C3 03 31 2E 30
86 06 41 00 01 41 01 05
88 07 08 42 00 0E D8 42 01 13 88
87 08 41 00 7D 42 01 03 84
C1 09 64
C1 0A 0F
83 0B 41 00 00
C4 0D 51 82 42 8F
C6 0E 2B 30 32 3A 30 30
C1 10 55`

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

func TestDeviceObjectInstanceExample(t *testing.T) {
	want := unhex(t, deviceHex)
	base := model.NewPath(3, 0)
	got, err := Encode(base, deviceRecords)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode:\n got %X\nwant %X", got, want)
	}
	recs, err := Decode(base, want, deviceTypes)
	if err != nil {
		t.Fatal(err)
	}
	if !equalRecords(recs, deviceRecords) {
		t.Fatalf("Decode = %v", recs)
	}
}

// The same instance wrapped in an Object Instance TLV, as a read of /3
// returns it, decodes both against /3 and against /3/0 (restated base).
func TestDeviceObjectExample(t *testing.T) {
	inner := unhex(t, deviceHex)
	want := append([]byte{0x08, 0x00, byte(len(inner))}, inner...)
	got, err := Encode(model.NewPath(3), deviceRecords)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode(/3):\n got %X\nwant %X", got, want)
	}
	for _, base := range []model.Path{model.NewPath(3), model.NewPath(3, 0)} {
		recs, err := Decode(base, want, deviceTypes)
		if err != nil {
			t.Fatalf("Decode(%s): %v", base, err)
		}
		if !equalRecords(recs, deviceRecords) {
			t.Fatalf("Decode(%s) = %v", base, recs)
		}
	}
}

// Single-resource and multiple-resource examples (§7.4.3.2).
func TestResourceExamples(t *testing.T) {
	cases := []struct {
		name string
		base model.Path
		hex  string
		recs []model.Record
	}{
		{"manufacturer /3/0/0", model.NewPath(3, 0, 0),
			"C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65",
			deviceRecords[:1]},
		{"power sources /3/0/6", model.NewPath(3, 0, 6),
			"86 06 41 00 01 41 01 05", deviceRecords[4:6]},
		{"error code /3/0/11/0", model.NewPath(3, 0, 11, 0),
			"41 00 00", deviceRecords[12:13]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := unhex(t, c.hex)
			got, err := Encode(c.base, c.recs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Encode = %X, want %X", got, want)
			}
			recs, err := Decode(c.base, want, deviceTypes)
			if err != nil {
				t.Fatal(err)
			}
			if !equalRecords(recs, c.recs) {
				t.Fatalf("Decode = %v", recs)
			}
		})
	}
}

// The Access Control object read of §7.4.3.2: two object instances, one
// with a 16-bit resource instance ID (310).
func TestMultipleObjectInstanceExample(t *testing.T) {
	want := unhex(t, `08 00 0E C1 00 01 C1 01 00 83 02 41 7F 07 C1 03 7F
		08 02 12 C1 00 03 C1 01 00 87 02 41 7F 07 61 01 36 01 C1 03 7F`)
	recs := []model.Record{
		rec("/2/0/0", model.Int(1)),
		rec("/2/0/1", model.Int(0)),
		rec("/2/0/2/127", model.Int(7)),
		rec("/2/0/3", model.Int(127)),
		rec("/2/2/0", model.Int(3)),
		rec("/2/2/1", model.Int(0)),
		rec("/2/2/2/127", model.Int(7)),
		rec("/2/2/2/310", model.Int(1)),
		rec("/2/2/3", model.Int(127)),
	}
	got, err := Encode(model.NewPath(2), recs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode = %X, want %X", got, want)
	}
	dec, err := Decode(model.NewPath(2), want, deviceTypes)
	if err != nil {
		t.Fatal(err)
	}
	if !equalRecords(dec, recs) {
		t.Fatalf("Decode = %v", dec)
	}
}

func TestRoundTripTypes(t *testing.T) {
	cases := []struct {
		v       model.Value
		wantLen int // length of the value field
	}{
		{model.Int(0), 1},
		{model.Int(-1), 1},
		{model.Int(127), 1},
		{model.Int(-128), 1},
		{model.Int(128), 2},
		{model.Int(-129), 2},
		{model.Int(math.MaxInt32), 4},
		{model.Int(math.MinInt32 - 1), 8},
		{model.Int(math.MinInt64), 8},
		{model.Uint(255), 1},
		{model.Uint(256), 2},
		{model.Uint(math.MaxUint32), 4},
		{model.Uint(math.MaxUint64), 8},
		{model.Float(1.5), 4},
		{model.Float(-0.25), 4},
		{model.Float(0.1), 8},
		{model.Float(math.MaxFloat64), 8},
		{model.Float(math.Inf(-1)), 4},
		{model.Float(math.NaN()), 8},
		{model.Bool(true), 1},
		{model.Bool(false), 1},
		{model.Value{Type: model.TypeTime, Int: 1700000000}, 4},
		{model.Objlnk(3, 65534), 4},
		{model.String(""), 0},
		{model.String("héllo"), 6},
		{model.Corelnk("</3/0>"), 6},
		{model.Opaque(nil), 0},
		{model.Opaque([]byte{0, 1, 2, 0xff}), 4},
		{model.Opaque(bytes.Repeat([]byte{7}, 70000)), 70000},
	}
	base := model.NewPath(9, 1, 5)
	for _, c := range cases {
		t.Run(c.v.Type.String()+"/"+c.v.String(), func(t *testing.T) {
			b, err := Encode(base, []model.Record{{Path: base, Value: c.v}})
			if err != nil {
				t.Fatal(err)
			}
			val, err := EncodeValue(c.v)
			if err != nil {
				t.Fatal(err)
			}
			if len(val) != c.wantLen {
				t.Errorf("value length %d, want %d", len(val), c.wantLen)
			}
			types := func(model.Path) (model.Type, bool) { return c.v.Type, true }
			recs, err := Decode(base, b, types)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 1 || recs[0].Path != base || !recs[0].Value.Equal(c.v) {
				t.Fatalf("round trip = %v, want %v", recs, c.v)
			}
		})
	}
}

func TestDecodeUnknownResourceIsOpaque(t *testing.T) {
	recs, err := Decode(model.NewPath(3, 0), []byte{0xC1, 0x63, 0x2A}, deviceTypes)
	if err != nil {
		t.Fatal(err)
	}
	want := []model.Record{rec("/3/0/99", model.Opaque([]byte{0x2A}))}
	if !equalRecords(recs, want) {
		t.Fatalf("got %v", recs)
	}
	// A nil resolver treats everything as unknown.
	if _, err := Decode(model.NewPath(3, 0), []byte{0xC1, 0x00, 0x2A}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeEmpty(t *testing.T) {
	recs, err := Decode(model.NewPath(3, 0), nil, deviceTypes)
	if err != nil || len(recs) != 0 {
		t.Fatalf("got %v, %v", recs, err)
	}
}

func TestDecodeNoInstance(t *testing.T) {
	_, err := Decode(model.NewPath(3), []byte{0xC1, 0x09, 0x64}, deviceTypes)
	if !errors.Is(err, ErrNoInstance) {
		t.Fatalf("err = %v, want ErrNoInstance", err)
	}
}

func TestDecodeMalformed(t *testing.T) {
	cases := map[string]struct {
		base model.Path
		hex  string
	}{
		"truncated header":            {model.NewPath(3, 0), "C8"},
		"truncated 16-bit id":         {model.NewPath(3, 0), "E1 00"},
		"truncated length field":      {model.NewPath(3, 0), "D8 00"},
		"length overruns":             {model.NewPath(3, 0), "C8 00 14 4F 70"},
		"huge 24-bit length":          {model.NewPath(3, 0), "D8 00 FF FF FF 00"},
		"short value in bits":         {model.NewPath(3, 0), "C3 00 41"},
		"resource instance at top":    {model.NewPath(3, 0), "41 00 01"},
		"object instance under inst.": {model.NewPath(3, 0), "03 01 C1 00 01"},
		"resource inside multiple":    {model.NewPath(3, 0), "83 06 C1 00 01"},
		"instance inside instance":    {model.NewPath(3), "05 00 03 00 00 00 00"},
		"restated wrong id":           {model.NewPath(3, 0, 6), "86 07 41 00 01"},
		"resource at root":            {model.Path{}, "C1 00 01"},
		"restated beside child":       {model.NewPath(3, 0, 6), "41 00 01 C1 06 01"},
		"child beside restated":       {model.NewPath(3, 0, 6), "C1 06 01 41 00 01"},
		"duplicate resource":          {model.NewPath(3, 0), "C1 09 64 C1 09 64"},
		"duplicate container":         {model.NewPath(3, 0), "83 06 41 00 01 83 06 41 01 01"},
		"integer of 3 bytes":          {model.NewPath(3, 0), "C3 09 00 00 01"},
		"reserved id 65535":           {model.NewPath(3, 0), "E1 FF FF 00"},
		"invalid UTF-8 string":        {model.NewPath(3, 0), "C1 00 FF"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(c.base, unhex(t, c.hex), deviceTypes)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
	boolTypes := func(model.Path) (model.Type, bool) { return model.TypeBoolean, true }
	if _, err := Decode(model.NewPath(1, 0), []byte{0xC1, 0x06, 0x02}, boolTypes); !errors.Is(err, ErrMalformed) {
		t.Fatalf("boolean 2: err = %v", err)
	}
	linkTypes := func(model.Path) (model.Type, bool) { return model.TypeObjlnk, true }
	if _, err := Decode(model.NewPath(1, 0), []byte{0xC2, 0x06, 0x00, 0x03}, linkTypes); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short objlnk: err = %v", err)
	}
}

func TestDecodeRecordCap(t *testing.T) {
	// 70000 empty opaque resource instances (3 bytes each, 16-bit IDs)
	// exceed MaxRecords.
	var body []byte
	for i := 0; i < MaxRecords+10; i++ {
		body = append(body, 0x60, byte(i>>8), byte(i))
	}
	data, err := appendEntry(nil, kindMultipleResource, 1, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(model.NewPath(9, 0), data, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := map[string]struct {
		base model.Path
		recs []model.Record
	}{
		"root":           {model.Path{}, []model.Record{rec("/3/0/0", model.Int(1))}},
		"outside base":   {model.NewPath(3, 0), []model.Record{rec("/3/1/0", model.Int(1))}},
		"instance path":  {model.NewPath(3), []model.Record{rec("/3/0", model.Int(1))}},
		"duplicate":      {model.NewPath(3, 0), []model.Record{rec("/3/0/0", model.Int(1)), rec("/3/0/0", model.Int(1))}},
		"mixed single":   {model.NewPath(3, 0), []model.Record{rec("/3/0/6", model.Int(1)), rec("/3/0/6/0", model.Int(1))}},
		"none value":     {model.NewPath(3, 0, 4), []model.Record{rec("/3/0/4", model.Value{})}},
		"two at RI base": {model.NewPath(3, 0, 6, 0), []model.Record{rec("/3/0/6/0", model.Int(1)), rec("/3/0/6/0", model.Int(2))}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Encode(c.base, c.recs); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

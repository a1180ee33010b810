package content

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
	"github.com/lwm2m-fota/lwm2m/lwm2m/text"
	"github.com/lwm2m-fota/lwm2m/lwm2m/tlv"
)

// fwTypes resolves part of the Firmware Update object (/5).
func fwTypes(p model.Path) (model.Type, bool) {
	if p.Object() != 5 {
		return 0, false
	}
	switch p.Resource() {
	case 0:
		return model.TypeOpaque, true
	case 1, 6, 7:
		return model.TypeString, true
	case 2, 10:
		return model.TypeNone, true
	case 3, 5, 8, 9, 11:
		return model.TypeInteger, true
	case 12:
		return model.TypeTime, true
	case 13:
		return model.TypeUnsigned, true
	}
	return 0, false
}

func equalRecords(a, b []model.Record) bool { return slices.EqualFunc(a, b, model.Record.Equal) }

var fwRecords = []model.Record{
	{Path: model.NewPath(5, 0, 1), Value: model.String("coap://[::1]:5683/fw")},
	{Path: model.NewPath(5, 0, 3), Value: model.Int(0)},
	{Path: model.NewPath(5, 0, 8, 0), Value: model.Int(0)},
	{Path: model.NewPath(5, 0, 8, 1), Value: model.Int(1)},
	{Path: model.NewPath(5, 0, 13), Value: model.Uint(3600)},
}

func TestMultiFormatsRoundTrip(t *testing.T) {
	base := model.NewPath(5, 0)
	for _, f := range []Format{TLV, SenMLJSON, SenMLCBOR} {
		if !Multi(f) || !f.Supported() {
			t.Errorf("%s: Multi/Supported false", f)
		}
		b, err := Encode(f, base, fwRecords)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		got, err := Decode(f, base, b, fwTypes)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !equalRecords(got, fwRecords) {
			t.Fatalf("%s: got %v", f, got)
		}
	}
}

// The dispatcher must give the same bytes as the codec packages.
func TestDispatchesToCodecs(t *testing.T) {
	base := model.NewPath(5, 0)
	want := map[Format]func(model.Path, []model.Record) ([]byte, error){
		TLV: tlv.Encode, SenMLJSON: senml.EncodeJSON, SenMLCBOR: senml.EncodeCBOR,
	}
	for f, enc := range want {
		a, _ := Encode(f, base, fwRecords)
		b, _ := enc(base, fwRecords)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: dispatcher and codec differ", f)
		}
	}
}

func TestTextPlain(t *testing.T) {
	base := model.NewPath(5, 0, 3)
	b, err := Encode(TextPlain, base, []model.Record{{Path: base, Value: model.Int(2)}})
	if err != nil || string(b) != "2" {
		t.Fatalf("Encode = %q, %v", b, err)
	}
	got, err := Decode(TextPlain, base, []byte("3"), fwTypes)
	if err != nil || !equalRecords(got, []model.Record{{Path: base, Value: model.Int(3)}}) {
		t.Fatalf("Decode = %v, %v", got, err)
	}
	// Unknown resources come back as strings.
	unk := model.NewPath(5, 0, 99)
	got, err = Decode(TextPlain, unk, []byte("x"), fwTypes)
	if err != nil || !equalRecords(got, []model.Record{{Path: unk, Value: model.String("x")}}) {
		t.Fatalf("Decode unknown = %v, %v", got, err)
	}
	if _, err := Decode(TextPlain, base, []byte("x"), fwTypes); !errors.Is(err, text.ErrMalformed) {
		t.Fatalf("bad integer: %v", err)
	}
}

func TestOpaque(t *testing.T) {
	base := model.NewPath(5, 0, 0)
	img := []byte{0xde, 0xad, 0xbe, 0xef}
	got, err := Decode(Opaque, base, img, fwTypes)
	if err != nil || !equalRecords(got, []model.Record{{Path: base, Value: model.Opaque(img)}}) {
		t.Fatalf("Decode = %v, %v", got, err)
	}
	img[0] = 0 // the record must not alias the input
	if got[0].Value.Bytes[0] != 0xde {
		t.Fatal("Decode aliased its input")
	}
	b, err := Encode(Opaque, base, got)
	if err != nil || !bytes.Equal(b, got[0].Value.Bytes) {
		t.Fatalf("Encode = %x, %v", b, err)
	}
}

func TestUnsupported(t *testing.T) {
	inst := model.NewPath(5, 0)
	res := model.NewPath(5, 0, 3)
	one := []model.Record{{Path: res, Value: model.Int(0)}}
	encCases := map[string]struct {
		f    Format
		base model.Path
		recs []model.Record
	}{
		"text, many records":  {TextPlain, inst, fwRecords},
		"text, not at base":   {TextPlain, inst, one},
		"opaque, integer":     {Opaque, res, one},
		"opaque, no records":  {Opaque, res, nil},
		"lwm2m json":          {LwM2MJSON, res, one},
		"link format":         {LinkFormat, res, one},
		"unknown format 9999": {Format(9999), res, one},
	}
	for name, c := range encCases {
		if _, err := Encode(c.f, c.base, c.recs); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Encode %s: err = %v, want ErrUnsupported", name, err)
		}
	}
	decCases := map[string]struct {
		f    Format
		base model.Path
	}{
		"text at instance":   {TextPlain, inst},
		"opaque at instance": {Opaque, inst},
		"opaque to integer":  {Opaque, res},
		"lwm2m json":         {LwM2MJSON, res},
		"link format":        {LinkFormat, res},
		"unknown":            {Format(1), res},
	}
	for name, c := range decCases {
		if _, err := Decode(c.f, c.base, []byte("1"), fwTypes); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Decode %s: err = %v, want ErrUnsupported", name, err)
		}
	}
	for _, f := range []Format{TextPlain, Opaque, LinkFormat, LwM2MJSON} {
		if Multi(f) {
			t.Errorf("Multi(%s) = true", f)
		}
	}
	if LwM2MJSON.Supported() || LinkFormat.Supported() {
		t.Error("LwM2MJSON or LinkFormat reported as supported")
	}
}

func TestFormatString(t *testing.T) {
	for f, want := range map[Format]string{
		TextPlain: "text/plain", LinkFormat: "application/link-format", Opaque: "application/octet-stream",
		SenMLJSON: "application/senml+json", SenMLCBOR: "application/senml+cbor",
		TLV: "application/vnd.oma.lwm2m+tlv", LwM2MJSON: "application/vnd.oma.lwm2m+json", 7: "Format(7)",
	} {
		if got := f.String(); got != want {
			t.Errorf("%d: %q, want %q", uint16(f), got, want)
		}
	}
}

var fuzzFormats = []Format{TextPlain, Opaque, SenMLJSON, SenMLCBOR, TLV, LwM2MJSON, LinkFormat}
var fuzzBases = []model.Path{model.NewPath(5), model.NewPath(5, 0), model.NewPath(5, 0, 1), model.NewPath(5, 0, 8), model.NewPath(5, 0, 13), model.NewPath(5, 0, 0), model.NewPath(5, 0, 8, 2)}

// FuzzDecode checks that Decode never panics for any format and that
// what it accepts survives Encode and a second Decode unchanged.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(4), uint8(1), []byte{0xC1, 0x03, 0x01, 0x86, 0x08, 0x41, 0x00, 0x00, 0x41, 0x01, 0x01})
	f.Add(uint8(2), uint8(1), []byte(`[{"bn":"/5/0/","n":"1","vs":"coap://x"},{"n":"13","v":60}]`))
	f.Add(uint8(0), uint8(4), []byte("3600"))
	f.Add(uint8(1), uint8(5), []byte{0, 1, 2})
	f.Add(uint8(3), uint8(2), []byte{0x81, 0xA2, 0x21, 0x66, '/', '5', '/', '0', '/', '1', 0x03, 0x60})
	f.Fuzz(func(t *testing.T, fi, bi uint8, data []byte) {
		format := fuzzFormats[int(fi)%len(fuzzFormats)]
		base := fuzzBases[int(bi)%len(fuzzBases)]
		recs, err := Decode(format, base, data, fwTypes)
		if err != nil {
			return
		}
		enc, err := Encode(format, base, recs)
		if err != nil {
			t.Fatalf("Encode(%s, %s, %v) after Decode: %v", format, base, recs, err)
		}
		again, err := Decode(format, base, enc, fwTypes)
		if err != nil {
			t.Fatalf("Decode(Encode) = %v for %q", err, enc)
		}
		if !equalRecords(recs, again) {
			t.Fatalf("round trip changed records:\n%v\n%v", recs, again)
		}
	})
}

// The LwM2M 1.0 draft numbers decode and encode as their registered formats.
func TestLegacyFormats(t *testing.T) {
	types := func(model.Path) (model.Type, bool) { return model.TypeInteger, true }
	recs, err := Decode(LegacyText, model.NewPath(1, 0, 1), []byte("120"), types)
	if err != nil || len(recs) != 1 || recs[0].Value.Int != 120 {
		t.Fatalf("1541: %v %v", recs, err)
	}
	want := []model.Record{{Path: model.NewPath(1, 0, 1), Value: model.Int(120)}}
	tlvBody, err := Encode(TLV, model.NewPath(1, 0), want)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := Encode(LegacyTLV, model.NewPath(1, 0), want)
	if err != nil || string(legacy) != string(tlvBody) {
		t.Fatalf("1542 encodes %x (%v), want the TLV %x", legacy, err, tlvBody)
	}
	if got, err := Decode(LegacyTLV, model.NewPath(1, 0), tlvBody, types); err != nil || !equalRecords(got, want) {
		t.Fatalf("1542 decodes %v (%v)", got, err)
	}
	if _, err := Decode(LegacyJSON, model.NewPath(1, 0), []byte("{}"), types); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("1543: %v, want ErrUnsupported", err)
	}
	if LegacyTLV.String() != TLV.String() || !Multi(LegacyTLV) || !LegacyText.Supported() {
		t.Error("legacy numbers do not describe their formats")
	}
}

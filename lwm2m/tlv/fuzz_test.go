package tlv

import (
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// fuzzTypes gives every resource a type derived from its ID, so that the
// fuzzer reaches every value decoder.
func fuzzTypes(p model.Path) (model.Type, bool) {
	t := model.Type(p.Resource() % 11)
	return t, t <= model.TypeCorelnk
}

var fuzzBases = []model.Path{
	model.NewPath(3), model.NewPath(3, 0), model.NewPath(3, 0, 6), model.NewPath(3, 0, 6, 1), {},
}

// FuzzDecode checks that Decode never panics and that whatever it accepts
// survives Encode and a second Decode unchanged.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(1), []byte{0xC8, 0x00, 0x03, 'a', 'b', 'c', 0x86, 0x06, 0x41, 0x00, 0x01, 0x41, 0x01, 0x05})
	f.Add(uint8(0), []byte{0x08, 0x00, 0x06, 0xC1, 0x02, 0x7F, 0xC1, 0x04, 0x01})
	f.Add(uint8(2), []byte{0x41, 0x00, 0x01, 0x61, 0x01, 0x36, 0x01})
	f.Add(uint8(3), []byte{0x44, 0x01, 0x3F, 0xC0, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b uint8, data []byte) {
		base := fuzzBases[int(b)%len(fuzzBases)]
		recs, err := Decode(base, data, fuzzTypes)
		if err != nil {
			return
		}
		enc, err := Encode(base, recs)
		if err != nil {
			t.Fatalf("Encode(%s, %v) after Decode: %v", base, recs, err)
		}
		again, err := Decode(base, enc, fuzzTypes)
		if err != nil {
			t.Fatalf("Decode(Encode) = %v for %X", err, enc)
		}
		if !equalRecords(recs, again) {
			t.Fatalf("round trip changed records:\n%v\n%v", recs, again)
		}
	})
}

package senml

import (
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// fuzzTypes gives every resource a type derived from its ID, so that the
// fuzzer reaches every conversion; IDs 10 and above are unknown.
func fuzzTypes(p model.Path) (model.Type, bool) {
	t := model.Type(p.Resource() % 11)
	return t, t <= model.TypeCorelnk
}

var fuzzBases = []model.Path{
	{}, model.NewPath(3), model.NewPath(3, 0), model.NewPath(3, 0, 6), model.NewPath(3, 0, 6, 1),
}

// fuzzRoundTrip checks that what decode accepts survives encode and a
// second decode unchanged.
func fuzzRoundTrip(t *testing.T, c codec, b uint8, data []byte) {
	base := fuzzBases[int(b)%len(fuzzBases)]
	recs, err := c.decode(base, data, fuzzTypes)
	if err != nil {
		return
	}
	enc, err := c.encode(base, recs)
	if err != nil {
		t.Fatalf("encode(%s, %v) after decode: %v", base, recs, err)
	}
	again, err := c.decode(base, enc, fuzzTypes)
	if err != nil {
		t.Fatalf("decode(encode) = %v for %q", err, enc)
	}
	if !equalRecords(recs, again) {
		t.Fatalf("round trip changed records:\n%v\n%v", recs, again)
	}
}

func FuzzDecodeJSON(f *testing.F) {
	f.Add(uint8(2), []byte(deviceJSON))
	f.Add(uint8(0), []byte(`[{"bn":"/3/0/","n":"1","vd":"AQI"},{"n":"8","vlo":"3:0"},{"n":"5","vb":false},{"n":"4","v":-1.5e3}]`))
	f.Add(uint8(3), []byte(`[{"bn":"/3/0/6/","n":"1","v":18446744073709551615,"t":0}]`))
	f.Fuzz(func(t *testing.T, b uint8, data []byte) {
		fuzzRoundTrip(t, codecs[0], b, data)
	})
}

func FuzzDecodeCBOR(f *testing.F) {
	f.Add(uint8(2), deviceCBOR(f))
	f.Add(uint8(0), unhex(f, "82 A2 21 66 2F332F302F34 02 F9 3E00 A2 00 66 2F332F302F38 63 766C6F 63 333A30"))
	f.Add(uint8(4), unhex(f, "81 A2 21 68 2F332F302F362F31 08 42 0102"))
	f.Fuzz(func(t *testing.T, b uint8, data []byte) {
		fuzzRoundTrip(t, codecs[1], b, data)
	})
}

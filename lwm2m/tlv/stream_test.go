package tlv

import (
	"bytes"
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

var pkg = model.NewPath(5, 0, 0)

func opaqueTypes(model.Path) (model.Type, bool) { return model.TypeOpaque, true }

// feed gives data to s in pieces whose sizes cycle through steps (each
// 1-64 bytes) and returns the value bytes, or the first error.
func feed(s *ValueStream, data, steps []byte) ([]byte, error) {
	var out []byte
	for i := 0; len(data) > 0; i++ {
		n := 8
		if len(steps) > 0 {
			n = 1 + int(steps[i%len(steps)])%64
		}
		n = min(n, len(data))
		v, err := s.Next(data[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, v...)
		data = data[n:]
	}
	return out, s.Close()
}

func TestValueStream(t *testing.T) {
	for _, size := range []int{0, 7, 8, 300, 70_000} {
		img := bytes.Repeat([]byte{0xA5, 0x5A, 3}, size)[:size]
		enc, err := Encode(pkg, []model.Record{{Path: pkg, Value: model.Opaque(img)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, steps := range [][]byte{nil, {0}, {1, 2, 63}} {
			got, err := feed(NewValueStream(0), enc, steps)
			if err != nil || !bytes.Equal(got, img) {
				t.Fatalf("%d bytes, steps %v: got %d bytes, %v", size, steps, len(got), err)
			}
		}
	}
	for name, bad := range map[string][]byte{
		"empty":             {},
		"short header":      {0xE8, 0x00},
		"short value":       {0xC3, 0x00, 1, 2},
		"trailing":          {0xC1, 0x00, 1, 2},
		"other resource":    {0xC1, 0x01, 1},
		"resource instance": {0x41, 0x00, 1},
	} {
		if _, err := feed(NewValueStream(0), bad, []byte{0}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzValueStream checks the streaming decoder against Decode: whatever
// the pieces, the stream accepts a payload exactly when Decode reads it
// as the single Resource TLV of /5/0/0, and yields the same value.
func FuzzValueStream(f *testing.F) {
	f.Add([]byte{0xC3, 0x00, 1, 2, 3}, []byte{0})
	f.Add([]byte{0xE8, 0x00, 0x00, 0x02, 1, 2}, []byte{1})
	f.Add([]byte{0xD8, 0x00, 0x02, 1, 2, 0xC1, 0x01, 1}, []byte{})
	f.Add([]byte{0xF0, 0x00, 0x00, 0x00, 0x01, 9}, []byte{3, 0})
	f.Add([]byte{0x41, 0x00, 1}, []byte{})
	f.Fuzz(func(t *testing.T, data, steps []byte) {
		recs, derr := Decode(pkg, data, opaqueTypes)
		one := derr == nil && len(recs) == 1 && recs[0].Path == pkg && len(data) > 0 && data[0]>>6 == kindResource
		got, err := feed(NewValueStream(0), data, steps)
		if (err == nil) != one {
			t.Fatalf("% X: stream error %v; Decode %v, %v", data, err, recs, derr)
		}
		if one && !bytes.Equal(got, recs[0].Value.Bytes) {
			t.Fatalf("% X: stream % X, Decode % X", data, got, recs[0].Value.Bytes)
		}
	})
}

package text

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// feed gives data to s in pieces whose sizes cycle through steps (each
// 1-64 bytes) and returns what s decoded, or its first error.
func feed(s *Base64Stream, data, steps []byte) ([]byte, error) {
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

func TestBase64Stream(t *testing.T) {
	img := make([]byte, 3000)
	for i := range img {
		img[i] = byte(i * 31)
	}
	enc := []byte(base64.StdEncoding.EncodeToString(img))
	for _, steps := range [][]byte{nil, {0}, {1, 2, 4}, {63}, {2, 0, 5, 60}} {
		got, err := feed(&Base64Stream{}, enc, steps)
		if err != nil || !bytes.Equal(got, img) {
			t.Fatalf("steps %v: %d bytes, %v", steps, len(got), err)
		}
	}
	for _, bad := range []string{"QQ=", "QQ==QQ==", "QR==", "Q*==", "QUJD\nRA"} {
		if _, err := feed(&Base64Stream{}, []byte(bad), []byte{0}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzBase64Stream checks the streaming decoder against the one-shot
// one, Decode of an Opaque value: the same bytes, or an error from both,
// whatever the pieces.
func FuzzBase64Stream(f *testing.F) {
	f.Add([]byte("QUJDRA=="), []byte{0})
	f.Add([]byte("QUJD\r\nRA=="), []byte{1, 3})
	f.Add([]byte("QQ==QQ=="), []byte{2})
	f.Add([]byte("QR=="), []byte{5})
	f.Add([]byte("QUJ"), []byte{})
	f.Fuzz(func(t *testing.T, data, steps []byte) {
		want, werr := Decode(data, model.TypeOpaque)
		got, err := feed(&Base64Stream{}, data, steps)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: stream error %v, one-shot error %v", data, err, werr)
		}
		if err == nil && !bytes.Equal(got, want.Bytes) {
			t.Fatalf("%q: stream %x, one-shot %x", data, got, want.Bytes)
		}
	})
}

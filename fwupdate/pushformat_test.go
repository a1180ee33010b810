package fwupdate_test

import (
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/tlv"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// pushBody writes body, the encoded package, to /5/0/0 in 1024-byte
// blocks of content format cf, as Wakaama does above 1024 bytes, and
// returns the answer to the last block sent.
func (f *fixture) pushBody(body []byte, cf int) codes.Code {
	f.t.Helper()
	for num := int64(0); ; num++ {
		lo, hi := num*1024, min((num+1)*1024, int64(len(body)))
		code := f.do(codes.PUT, "/5/0/0", cf, body[lo:hi], block1(num, hi < int64(len(body))))
		if code != codes.Continue || hi == int64(len(body)) {
			return code
		}
	}
}

func tlvPackage(t *testing.T, img []byte) []byte {
	t.Helper()
	p := model.NewPath(5, 0, 0)
	b, err := tlv.Encode(p, []model.Record{{Path: p, Value: model.Opaque(img)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A package pushed with Block1 as base64 text (content format 0) or as a
// TLV (11542, and the draft number 1542) is decoded block by block and
// stored exactly; Wakaama pushes both ways. Before, any Block1 write to
// /5/0/0 other than application/octet-stream got 4.15.
func TestPushBlock1Encoded(t *testing.T) {
	img := image(70_000, 7) // over 64 KiB: a 24-bit TLV length
	for name, tc := range map[string]struct {
		body []byte
		cf   int
	}{
		"text base64": {[]byte(base64.StdEncoding.EncodeToString(img)), 0},
		"tlv":         {tlvPackage(t, img), 11542},
		"legacy tlv":  {tlvPackage(t, img), 1542},
	} {
		t.Run(name, func(t *testing.T) {
			h := newMem()
			f := setup(t, h, fwupdate.Config{})
			if c := f.pushBody(tc.body, tc.cf); c != codes.Changed {
				t.Fatalf("push ended with %v", c)
			}
			f.waitState(fwupdate.StateDownloaded, 0)
			if sum, n, _, _, _ := h.snapshot(); sum != sha256.Sum256(img) || n != int64(len(img)) {
				t.Fatalf("stored %d bytes, hash match %v", n, sum == sha256.Sum256(img))
			}
		})
	}
}

// A malformed encoded push gets 4.00 and the partial package is dropped.
func TestPushBlock1EncodedMalformed(t *testing.T) {
	img := image(5000, 8)
	b64 := []byte(base64.StdEncoding.EncodeToString(img))
	badChar := append([]byte(nil), b64...)
	badChar[3000] = '*'
	padMid := append([]byte(nil), b64[:2048]...)
	padMid = append(padMid, []byte("QQ==")...)
	padMid = append(padMid, b64[2048:]...)
	good := tlvPackage(t, img)
	short := good[:len(good)-10] // ends before the declared length
	trailing := append(append([]byte(nil), good...), 0xC1, 0x01, 0x00)
	otherID := append([]byte(nil), good...)
	otherID[1] = 1 // the TLV of resource 1
	for name, tc := range map[string]struct {
		body []byte
		cf   int
	}{
		"base64 bad character":    {badChar, 0},
		"base64 padding inside":   {padMid, 0},
		"base64 cut in quantum":   {b64[:len(b64)-1], 0},
		"tlv short":               {short, 11542},
		"tlv trailing bytes":      {trailing, 11542},
		"tlv of another resource": {otherID, 11542},
	} {
		t.Run(name, func(t *testing.T) {
			h := newMem()
			f := setup(t, h, fwupdate.Config{})
			if c := f.pushBody(tc.body, tc.cf); c != codes.BadRequest {
				t.Fatalf("push ended with %v, want 4.00", c)
			}
			f.waitState(fwupdate.StateIdle, 0)
			if _, _, resets, _, _ := h.snapshot(); resets == 0 {
				t.Error("partial package not dropped through Reset")
			}
		})
	}
}

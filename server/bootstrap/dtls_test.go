package bootstrap

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

var bsKey = []byte("bootstrap key 16")

// The PSK leg: the device bootstraps over DTLS with its bootstrap PSK and
// receives, inside that session, the PSK of its LwM2M server.
func TestBootstrapOverDTLSWithPSK(t *testing.T) {
	cfg := strings.Replace(testConfig, `"dev-1": {`, `"dev-1": {"bootstrap_identity": "dev-1-bs",`, 1)
	s := start(t, &Server{DTLSAddr: "127.0.0.1:0", PSKs: map[string][]byte{"dev-1-bs": bsKey, "other": []byte("other key")},
		Config: mustConfig(t, cfg)})
	if s.LocalAddr() != nil {
		t.Fatalf("a CoAP port without Addr: %v", s.LocalAddr())
	}
	d, err := newDevice(t, nil).dialDTLS(s.DTLSLocalAddr().String(), "dev-1-bs", bsKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := d.request("ep=dev-1", "pct=112"); code != codes.Changed {
		t.Fatalf("Bootstrap-Request over DTLS: %v", code)
	}
	d.waitFinish()
	got := d.requests()
	if seq := sequence(got); seq != "DELETE /0, DELETE /1, DELETE /2, PUT /0/1, PUT /1/0, PUT /2/0, POST /bs" {
		t.Fatalf("sequence %s", seq)
	}
	checkWrites(t, got, content.SenMLCBOR, wantRecords(t))
	var as []Attempt
	waitfor.Until(t, 5*time.Second, func() error {
		if as = s.Attempts("dev-1"); len(as) != 1 {
			return fmt.Errorf("%d attempts", len(as))
		}
		return nil
	})
	if a := as[0]; a.Outcome != Finished || a.Transport != "coaps" || a.PSKIdentity != "dev-1-bs" {
		t.Fatalf("attempt %+v", a)
	}
}

func TestBootstrapIdentityMustMatch(t *testing.T) {
	cfg := strings.Replace(testConfig, `"dev-1": {`, `"dev-1": {"bootstrap_identity": "dev-1-bs",`, 1)
	otherKey := []byte("other key")
	s := start(t, &Server{Addr: "127.0.0.1:0", DTLSAddr: "127.0.0.1:0",
		PSKs: map[string][]byte{"dev-1-bs": bsKey, "other": otherKey}, Config: mustConfig(t, cfg)})
	// Over DTLS with another device's identity.
	d, err := newDevice(t, nil).dialDTLS(s.DTLSLocalAddr().String(), "other", otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := d.request("ep=dev-1"); code != codes.BadRequest {
		t.Fatalf("dev-1 under the identity other: %v, want 4.00", code)
	}
	// Over plain CoAP, the keys would cross the network in clear.
	if code, _ := newDevice(t, nil).dial(s.LocalAddr().String()).request("ep=dev-1"); code != codes.BadRequest {
		t.Fatalf("dev-1 over plain CoAP: %v, want 4.00", code)
	}
	as := s.Attempts("dev-1")
	if len(as) != 2 || as[0].PSKIdentity != "other" || as[1].Transport != "coap" || as[0].Outcome != Refused {
		t.Fatalf("history %+v", as)
	}
	if len(d.requests()) != 0 {
		t.Fatalf("the server wrote to an impostor: %v", d.requests())
	}
	// An unknown identity gets no session at all.
	if _, err := newDevice(t, nil).dialDTLS(s.DTLSLocalAddr().String(), "nobody", []byte(hex.EncodeToString(bsKey))); err == nil {
		t.Fatal("a DTLS session under an unknown identity")
	}
}

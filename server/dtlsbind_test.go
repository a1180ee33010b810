package server

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
)

// An endpoint's first registration over DTLS binds it to that PSK
// identity, beyond the registration's life and across a restart: another
// identity or a plain CoAP peer then gets 4.03, even after the device
// de-registered.
func TestDTLSEndpointBinding(t *testing.T) {
	db := filepath.Join(t.TempDir(), "reg.db")
	st, err := OpenBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	psks := map[string][]byte{"psk-dev": testPSK, "other": []byte("another key 1234")}
	s1 := &Server{Store: st, Addr: "127.0.0.1:0", DTLSAddr: "127.0.0.1:0", PSKs: psks, Logger: testLogger(t)}
	if err := s1.Listen(); err != nil {
		t.Fatal(err)
	}
	go s1.Serve(context.Background())
	dev := dtlsDevice(t, s1.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	reg, _ := s1.Registration("secure1")
	if resp, err := dev.Delete(ctxT(t), "/rd/"+reg.ID); err != nil || resp.Code() != codes.Deleted {
		t.Fatalf("de-register: %v %v", resp, err)
	}
	dev.Close()
	s1.Close()
	st.Close() // bbolt locks the file; Close leaves the caller's store open

	st2, err := OpenBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() }) // after the server's cleanup, which runs first
	s := startServer(t, &Server{Store: st2, DTLSAddr: "127.0.0.1:0", PSKs: psks})
	if _, ok := s.Registration("secure1"); ok {
		t.Fatal("de-registered endpoint reloaded")
	}
	plain, err := coapudp.Dial(s.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if resp := register(t, plain, "secure1", "</3/0>"); resp.Code() != codes.Forbidden {
		t.Errorf("plain CoAP register of a bound endpoint: %v, want 4.03", resp.Code())
	}
	other, err := dialDTLS(t, s.DTLSLocalAddr().String(), "other", []byte("another key 1234"))
	if err != nil {
		t.Fatal(err)
	}
	if resp := register(t, other, "secure1", "</3/0>"); resp.Code() != codes.Forbidden {
		t.Errorf("register by another identity: %v, want 4.03", resp.Code())
	}
	// The other identity may bind a name of its own.
	if resp := register(t, other, "secure2", "</3/0>"); resp.Code() != codes.Created {
		t.Errorf("register of a new endpoint: %v", resp.Code())
	}
	// A plain registration does not bind: DTLS may take the name over.
	if resp := register(t, plain, "plain1", "</3/0>"); resp.Code() != codes.Created {
		t.Fatalf("plain register: %v", resp.Code())
	}
	if resp := register(t, other, "plain1", "</3/0>"); resp.Code() != codes.Created {
		t.Errorf("DTLS register of a plain endpoint: %v", resp.Code())
	}
	resp, err := plain.Post(ctxT(t), "/rd", message.AppLinkFormat, strings.NewReader("</3/0>"),
		message.Option{ID: message.URIQuery, Value: []byte("ep=plain1")})
	if err != nil || resp.Code() != codes.Forbidden {
		t.Errorf("plain register after DTLS bound the endpoint: %v %v", resp, err)
	}
	dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1") // the bound identity still can
}

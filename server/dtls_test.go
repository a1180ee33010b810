package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

func TestParsePSKs(t *testing.T) {
	in := `# devices
dev1:000102030405060708090a0b0c0d0e0f

  urn:imei:1234:DEADBEEF  
# trailing comment
`
	m, err := ParsePSKs(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || !bytes.Equal(m["dev1"], []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}) ||
		!bytes.Equal(m["urn:imei:1234"], []byte{0xde, 0xad, 0xbe, 0xef}) {
		t.Errorf("got %x", m)
	}
	for _, bad := range []string{"nocolon", ":00", "dev:zz", "dev:", "a:00\na:01"} {
		if _, err := ParsePSKs(strings.NewReader(bad)); !errors.Is(err, ErrPSKFile) {
			t.Errorf("%q: err %v, want ErrPSKFile", bad, err)
		}
	}
}

func TestListenDTLSNeedsPSKs(t *testing.T) {
	s := &Server{Addr: "127.0.0.1:0", DTLSAddr: "127.0.0.1:0", Logger: testLogger(t)}
	if err := s.Listen(); err == nil {
		s.Close()
		t.Fatal("Listen with DTLSAddr and no PSKs succeeded")
	}
}

var testPSK = []byte("0123456789abcdef")

// dtlsDevice registers ep over DTLS with the given PSK and answers
// GET /3/0/3 with "9.9". It fails the test if the handshake fails.
func dtlsDevice(t *testing.T, addr, identity string, key []byte, ep string) *udpclient.Conn {
	t.Helper()
	cc, err := dialDTLS(t, addr, identity, key)
	if err != nil {
		t.Fatalf("dtls handshake: %v", err)
	}
	resp, err := cc.Post(ctxT(t), "/rd", message.AppLinkFormat, strings.NewReader("</3/0>,</5/0>"),
		message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)},
		message.Option{ID: message.URIQuery, Value: []byte("lt=60")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.Created {
		t.Fatalf("register over DTLS: %v", resp.Code())
	}
	return cc
}

func dialDTLS(t *testing.T, addr, identity string, key []byte) (*udpclient.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := dtlsconf.Dial(ctx, addr, &dtlsconf.Config{PSKIdentity: []byte(identity), PSK: key, FlightInterval: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	r := mux.NewRouter()
	r.DefaultHandle(mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		p, _ := m.Options().Path()
		if m.Code() == codes.GET && p == "/3/0/3" {
			_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader("9.9"))
			return
		}
		_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
	}))
	cc := coapdtls.Client(conn, options.WithMux(r), options.WithBlockwise(false, 0, 0), options.WithCloseSocket())
	t.Cleanup(func() { cc.Close() })
	return cc, nil
}

func startDTLSServer(t *testing.T) *Server {
	return startServer(t, &Server{DTLSAddr: "127.0.0.1:0", PSKs: map[string][]byte{"psk-dev": testPSK, "other": []byte("another key 1234")}})
}

// TestDTLSRegisterAndRead: a device registers over DTLS with its PSK and
// the server's requests reach it over that session. The device's socket
// is connected to the DTLS port, so a request sent over plain UDP could
// not reach it.
func TestDTLSRegisterAndRead(t *testing.T) {
	s := startDTLSServer(t)
	dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	reg, ok := s.Registration("secure1")
	if !ok || !reg.Secure || reg.PSKIdentity != "psk-dev" {
		t.Fatalf("registration %+v", reg)
	}
	c, err := s.Read(ctxT(t), "secure1", mustPath("/3/0/3"), content.TextPlain)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Payload) != "9.9" {
		t.Errorf("read %q", c.Payload)
	}
	if _, err := s.Read(ctxT(t), "secure1", mustPath("/3/0/1"), content.TextPlain); !isCode(err, codes.NotFound) {
		t.Errorf("read of a missing resource: %v", err)
	}
}

func isCode(err error, c codes.Code) bool {
	var ce *CodeError
	return errors.As(err, &ce) && ce.Code == c
}

func TestDTLSWrongPSK(t *testing.T) {
	s := startDTLSServer(t)
	for _, c := range []struct{ name, identity string }{{"wrong key", "psk-dev"}, {"unknown identity", "nobody"}} {
		t.Run(c.name, func(t *testing.T) {
			_, err := dialDTLS(t, s.DTLSLocalAddr().String(), c.identity, []byte("not the right key"))
			if !errors.Is(err, dtlsconf.ErrPSKRejected) && !errors.Is(err, dtlsconf.ErrTimeout) {
				t.Errorf("handshake: %v, want a PSK rejection or a timeout", err)
			}
		})
	}
	if n := len(s.Registrations()); n != 0 {
		t.Errorf("%d registrations", n)
	}
}

// TestDTLSRegistrationNotHijacked: plain UDP and another PSK identity can
// neither update, replace nor de-register a registration made over DTLS
// (which would redirect the server's requests to them).
func TestDTLSRegistrationNotHijacked(t *testing.T) {
	s := startDTLSServer(t)
	dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	reg, _ := s.Registration("secure1")

	plain, err := coapudp.Dial(s.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	other, err := dialDTLS(t, s.DTLSLocalAddr().String(), "other", []byte("another key 1234"))
	if err != nil {
		t.Fatal(err)
	}
	for name, cc := range map[string]*udpclient.Conn{"plain": plain, "other identity": other} {
		resp, err := cc.Post(ctxT(t), "/rd/"+reg.ID, message.TextPlain, bytes.NewReader(nil))
		if err != nil || resp.Code() != codes.Forbidden {
			t.Errorf("%s: update: %v %v, want 4.03", name, resp, err)
		}
		resp, err = cc.Post(ctxT(t), "/rd", message.AppLinkFormat, strings.NewReader("</3/0>"),
			message.Option{ID: message.URIQuery, Value: []byte("ep=secure1")})
		if err != nil || resp.Code() != codes.Forbidden {
			t.Errorf("%s: register: %v %v, want 4.03", name, resp, err)
		}
		resp, err = cc.Delete(ctxT(t), "/rd/"+reg.ID)
		if err != nil || resp.Code() != codes.Forbidden {
			t.Errorf("%s: de-register: %v %v, want 4.03", name, resp, err)
		}
	}
	if got, ok := s.Registration("secure1"); !ok || got.ID != reg.ID || got.Addr != reg.Addr {
		t.Errorf("registration changed: %+v", got)
	}
}

// TestDTLSSessionGone: once the device's session is closed, requests fail
// with ErrNoSession instead of going out over plain UDP.
func TestDTLSSessionGone(t *testing.T) {
	s := startDTLSServer(t)
	cc := dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	cc.Close() // sends close_notify
	waitfor.Until(t, 5*time.Second, func() error {
		_, err := s.Read(ctxT(t), "secure1", mustPath("/3/0/3"), content.TextPlain)
		if !errors.Is(err, ErrNoSession) {
			return fmt.Errorf("read after close: %v, want ErrNoSession", err)
		}
		return nil
	})
}

// TestDTLSNewSessionReplacesOld: a device that comes back in a new DTLS
// session (after a restart) and registers again is reached over the new
// session, and the server closes the old one.
func TestDTLSNewSessionReplacesOld(t *testing.T) {
	s := startDTLSServer(t)
	first := dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	oldAddr := first.LocalAddr().String()
	dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	if reg, _ := s.Registration("secure1"); reg.Addr == oldAddr {
		t.Fatalf("registration still at the old address %s", oldAddr)
	}
	if _, err := s.Read(ctxT(t), "secure1", mustPath("/3/0/3"), content.TextPlain); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.Done():
	case <-time.After(5 * time.Second):
		t.Error("the old session is still open")
	}
}

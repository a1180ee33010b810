package server

import (
	"crypto/sha256"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

// TestWildcardBind runs the operations a user runs against a server bound
// to all interfaces, the shipped default, with a device that registered
// after start-up. Each (bind, device) pair covers one way the kernel
// reports addresses: plain IPv4, plain IPv6, and IPv4-mapped IPv6 on a
// dual-stack socket.
func TestWildcardBind(t *testing.T) {
	cases := []struct{ bind, device string }{
		{":0", "127.0.0.1"},        // dual-stack socket, IPv4-mapped peer
		{":0", "::1"},              // dual-stack socket, IPv6 peer
		{"0.0.0.0:0", "127.0.0.1"}, // IPv4 only
		{"[::]:0", "::1"},          // IPv6 socket
		{"[::]:0", "127.0.0.1"},    // IPv6 socket, IPv4-mapped peer
	}
	for _, c := range cases {
		t.Run(c.bind+"/"+c.device, func(t *testing.T) {
			t.Parallel()
			// A request that lands on the wrong go-coap connection
			// times out; keep that short so a failure is quick.
			s := startServer(t, &Server{Addr: c.bind, RequestTimeout: 3 * time.Second})
			port := s.LocalAddr().(*net.UDPAddr).Port
			d := newFakeDevice(t, net.JoinHostPort(c.device, strconv.Itoa(port)), "dev1")
			ctx := ctxT(t)
			got, err := s.Read(ctx, "dev1", mustPath("/3/0/0"), content.TextPlain)
			if err != nil || string(got.Payload) != "Acme" {
				t.Fatalf("read: %q %v", got.Payload, err)
			}
			if err := s.Write(ctx, "dev1", mustPath("/1/0/1"), content.TextPlain, []byte("300"), true); err != nil {
				t.Fatalf("write: %v", err)
			}
			if v := d.get("/1/0/1"); v != "300" {
				t.Errorf("after write /1/0/1 = %q", v)
			}
			if err := s.Execute(ctx, "dev1", mustPath("/3/0/4"), ""); err != nil {
				t.Fatalf("execute: %v", err)
			}
			notes := make(chan string, 4)
			o, err := s.Observe(ctx, "dev1", mustPath("/1/0/1"), content.TextPlain, func(n Notification) { notes <- string(n.Payload) })
			if err != nil {
				t.Fatalf("observe: %v", err)
			}
			if v := <-notes; v != "300" {
				t.Errorf("first notification %q", v)
			}
			d.mu.Lock()
			d.setLocked("/1/0/1", "120")
			d.mu.Unlock()
			select {
			case v := <-notes:
				if v != "120" {
					t.Errorf("notification %q", v)
				}
			case <-ctx.Done():
				t.Fatal("no notification")
			}
			if err := o.Cancel(ctx); err != nil {
				t.Errorf("cancel: %v", err)
			}
			// Push over its own socket bound to the CoAP port, then a
			// pull from the image port, each with the re-registration
			// that ends an update.
			for _, mode := range []Method{Push, PullCoAP} {
				f, sum := writeImage(t, 5000)
				if r, err := s.Update(ctx, "dev1", f, mode, nil); err != nil || r != fwobj.ResultSuccess {
					t.Fatalf("update %v: %v %v", mode, r, err)
				}
				if sha256.Sum256(d.firmware()) != sum {
					t.Errorf("update %v: device got another image", mode)
				}
			}
			if uri, want := d.get("/5/0/1"), "coap://"+net.JoinHostPort(c.device, ""); !strings.HasPrefix(uri, want) {
				t.Errorf("package URI %q, want the address the device registered to, %s...", uri, want)
			}
		})
	}
}

// The same over DTLS on a wildcard coaps bind.
func TestWildcardBindDTLS(t *testing.T) {
	s := startServer(t, &Server{Addr: ":0", DTLSAddr: ":0", PSKs: map[string][]byte{"psk-dev": testPSK}, RequestTimeout: 3 * time.Second})
	port := s.DTLSLocalAddr().(*net.UDPAddr).Port
	for i, host := range []string{"127.0.0.1", "::1"} {
		ep := "secure" + strconv.Itoa(i)
		dtlsDevice(t, net.JoinHostPort(host, strconv.Itoa(port)), "psk-dev", testPSK, ep)
		c, err := s.Read(ctxT(t), ep, mustPath("/3/0/3"), content.TextPlain)
		if err != nil || string(c.Payload) != "9.9" {
			t.Errorf("read over DTLS from %s: %q %v", host, c.Payload, err)
		}
	}
}

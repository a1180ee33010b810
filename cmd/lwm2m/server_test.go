package main

import (
	"bytes"
	"context"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpcoder "github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// srvStart runs a server with its API on httptest and registers one
// device, "dev1", that answers nothing but the registration.
func srvStart(t *testing.T) string {
	t.Helper()
	api, _ := srvStartCoAP(t)
	return api
}

// srvStartCoAP is srvStart that also returns the CoAP address.
func srvStartCoAP(t *testing.T) (api, coapAddr string) {
	t.Helper()
	s := &server.Server{Addr: "127.0.0.1:0", RequestTimeout: 2 * time.Second}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Serve(ctx)
	t.Cleanup(cancel)
	tok, err := httpapi.LoadOrCreateToken(srvDefaultTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(httpapi.Handler(s, httpapi.Config{Token: tok}))
	t.Cleanup(hs.Close)

	cc, err := coapudp.Dial(s.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	resp, err := cc.Post(rctx, "/rd", message.AppLinkFormat, bytes.NewReader([]byte("</3/0>")),
		message.Option{ID: message.URIQuery, Value: []byte("ep=dev1")})
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("register: %v %v", resp, err)
	}
	return hs.URL, s.LocalAddr().String()
}

func srvRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runServer(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestServerCommandExitCodes(t *testing.T) {
	api := srvStart(t)
	pkg := filepath.Join(t.TempDir(), "fw.bin")
	os.WriteFile(pkg, []byte("firmware"), 0o600)
	cases := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"help", []string{"-h"}, 0, "usage: lwm2m server"},
		{"sub help", []string{"read", "-h"}, 0, "usage: lwm2m server read"},
		{"unknown command", []string{"frobnicate"}, 2, ""},
		{"bad flag", []string{"-nosuch"}, 2, ""},
		{"list", []string{"list", "-api", api}, 0, "dev1"},
		{"list with --api", []string{"list", "--api", api}, 0, "dev1"},
		{"read without -ep", []string{"read", "-api", api, "/3/0"}, 2, ""},
		{"read without path", []string{"read", "-api", api, "-ep", "dev1"}, 2, ""},
		{"read unknown endpoint", []string{"read", "-api", api, "-ep", "nobody", "/3/0"}, 1, ""},
		{"read unanswered", []string{"read", "-api", api, "-ep", "dev1", "/3/0/0"}, 1, ""},
		{"update needs ep or match", []string{"update", "-api", api, "-package", pkg}, 2, ""},
		{"update bad method", []string{"update", "-api", api, "-ep", "dev1", "-package", pkg, "-method", "fax"}, 2, ""},
		{"update unknown endpoint", []string{"update", "-api", api, "-ep", "nobody", "-package", pkg}, 1, ""},
		{"update nothing matches", []string{"update", "-api", api, "-match", "zz*", "-package", pkg}, 1, ""},
		{"no server", []string{"list", "-api", "http://127.0.0.1:1"}, 1, ""},
		{"-api before the command", []string{"-api", api, "list"}, 0, "dev1"},
		{"-api as host:port", []string{"list", "-api", strings.TrimPrefix(api, "http://")}, 0, "dev1"},
		{"server flag before a command", []string{"-coap", ":0", "list", "-api", api}, 2, ""},
		{"bad format", []string{"read", "-api", api, "-ep", "dev1", "-format", "bogus", "/3/0"}, 2, ""},
		{"bad path", []string{"read", "-api", api, "-ep", "dev1", "/3/x"}, 2, ""},
		{"bad timeout", []string{"read", "-api", api, "-ep", "dev1", "-timeout", "0s", "/3/0"}, 2, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := srvRun(t, c.args...)
			if code != c.code || !strings.Contains(out, c.out) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out, errs)
			}
		})
	}
}

// TestServerUsage: usage goes to stderr once on a usage error, to stdout
// with -h, and names every flag.
func TestServerUsage(t *testing.T) {
	code, out, errs := srvRun(t, "-nosuch")
	if code != 2 || out != "" || strings.Count(errs, "usage: lwm2m server") != 1 {
		t.Errorf("bad flag: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, f := range []string{"-coap ", "-coap-images", "-coaps", "-psk-file", "-api", "-http", "-db", "-public-host", "-token-file", "-max-package-size", "-v\t", "list", "update"} {
		if !strings.Contains(errs, f) {
			t.Errorf("usage lacks %q:\n%s", f, errs)
		}
	}
	code, out, errs = srvRun(t, "-h")
	if code != 0 || errs != "" || strings.Count(out, "usage: lwm2m server") != 1 {
		t.Errorf("-h: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = srvRun(t, "read", "-nosuch")
	if code != 2 || out != "" || strings.Count(errs, "usage: lwm2m server read") != 1 || !strings.Contains(errs, "-token-file") {
		t.Errorf("read -nosuch: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = srvRun(t, "read", "-ep", "x")
	if code != 2 || out != "" || strings.Count(errs, "usage: lwm2m server read") != 1 {
		t.Errorf("read without a path: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestServerCommandErrors: an error says what happened, once.
func TestServerCommandErrors(t *testing.T) {
	api, coapAddr := srvStartCoAP(t)
	srvRegisterMute(t, coapAddr, "mute")
	code, _, errs := srvRun(t, "read", "-api", api, "-ep", "mute", "-timeout", "1s", "/3/0")
	want := "lwm2m server read: device mute did not answer READ /3/0 within 1s\n"
	if code != 1 || errs != want {
		t.Errorf("exit %d, stderr %q, want %q", code, errs, want)
	}
	code, _, errs = srvRun(t, "read", "-api", api, "-ep", "dev1", "/3/0")
	if want := "lwm2m server read: read /3/0 on dev1: 4.04 NotFound\n"; code != 1 || errs != want {
		t.Errorf("exit %d, stderr %q, want %q", code, errs, want)
	}
	code, _, errs = srvRun(t, "update", "-api", api, "-ep", "dev1", "-package", "/etc/hostname", "-method", "pull-http", "-timeout", "5s")
	if code != 1 || !strings.Contains(errs, "-http") || strings.Contains(errs, "HTTPAddr") {
		t.Errorf("pull-http without -http: exit %d: %q", code, errs)
	}
}

// srvRegisterMute registers ep from a socket that answers nothing after.
func srvRegisterMute(t *testing.T, coapAddr, ep string) {
	t.Helper()
	c, err := net.Dial("udp", coapAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := message.Message{Code: codes.POST, Type: message.Confirmable, MessageID: 1, Token: message.Token{1},
		Options: message.Options{{ID: message.URIPath, Value: []byte("rd")}, {ID: message.URIQuery, Value: []byte("ep=" + ep)}}}
	b := make([]byte, 256)
	n, err := udpcoder.DefaultCoder.Encode(m, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b[:n]); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err = c.Read(b)
	resp := message.Message{Options: make(message.Options, 0, 16)}
	if err == nil {
		_, err = udpcoder.DefaultCoder.Decode(b[:n], &resp)
	}
	if err != nil || resp.Code != codes.Created {
		t.Fatalf("register: %v %v", resp.Code, err)
	}
}

func TestServerCommandAPIEnv(t *testing.T) {
	api := srvStart(t)
	t.Setenv(srvAPIEnv, api)
	if code, out, errs := srvRun(t, "list"); code != 0 || !strings.Contains(out, "dev1") {
		t.Errorf("exit %d: %s %s", code, out, errs)
	}
}

// TestServerReleasesDB: lwm2m server closes the -db store it opened,
// whether it stops or fails to start (here: -http on a port in use), so
// that bbolt's lock on the file is released. server.Server.Close leaves a
// store it was given open.
func TestServerReleasesDB(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	db := filepath.Join(dir, "reg.db")
	tok := filepath.Join(dir, "token")
	for _, c := range []struct {
		name string
		args []string
		code int
	}{
		{"stopped", nil, 0},
		{"failed to listen", []string{"-http", busy.Addr().String()}, 1},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb bytes.Buffer
		args := append([]string{"-coap", "127.0.0.1:0", "-api", "127.0.0.1:0", "-db", db, "-token-file", tok}, c.args...)
		if c.code == 0 {
			cancel() // Serve returns at once
		}
		code := runServer(ctx, args, &out, &errb)
		cancel()
		if code != c.code {
			t.Fatalf("%s: exit %d, want %d: %s", c.name, code, c.code, errb.String())
		}
		st, err := server.OpenBoltStore(db)
		if err != nil {
			t.Fatalf("%s: the store is still locked: %v", c.name, err)
		}
		st.Close()
	}
}

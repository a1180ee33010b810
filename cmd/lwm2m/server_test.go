package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"

	"github.com/lwm2m-fota/lwm2m/server"
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
	tok, err := server.LoadOrCreateAPIToken(srvDefaultTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.APIHandler(server.APIConfig{Token: tok}))
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

func TestServerCommandAPIEnv(t *testing.T) {
	api := srvStart(t)
	t.Setenv(srvAPIEnv, api)
	if code, out, errs := srvRun(t, "list"); code != 0 || !strings.Contains(out, "dev1") {
		t.Errorf("exit %d: %s %s", code, out, errs)
	}
}

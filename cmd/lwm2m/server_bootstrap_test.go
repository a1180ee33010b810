package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

const srvBSConfig = `{"endpoints": {"bs-dev": {
  "servers": [{"uri": "coaps://127.0.0.1:5684", "short_server_id": 3, "lifetime": 60,
               "security": {"mode": "psk", "identity": "bs-dev", "key": "00112233445566778899aabbccddeeff"}}]},
  "secure-dev": {"bootstrap_identity": "secure-dev-bs",
  "servers": [{"uri": "coaps://127.0.0.1:5684", "short_server_id": 4,
               "security": {"mode": "psk", "identity": "secure-dev", "key": "00112233445566778899aabbccddeeff"}}]}}}`

func TestServerBootstrapFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "bs.json")
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(srvBSConfig), 0o600)
	os.WriteFile(bad, []byte(strings.Replace(srvBSConfig, `"short_server_id": 3`, `"short_server_id": 0`, 1)), 0o600)
	badPSK := filepath.Join(dir, "psk.txt")
	os.WriteFile(badPSK, []byte("dev-1:nothex\n"), 0o600)
	base := []string{"-coap", "127.0.0.1:0", "-api", "127.0.0.1:0", "-token-file", filepath.Join(dir, "tok")}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-bootstrap", "127.0.0.1:0"}, 2, "need -bootstrap-config"},
		{[]string{"-bootstrap-config", good}, 2, "need -bootstrap or -bootstrap-dtls"},
		{[]string{"-bootstrap-dtls", "127.0.0.1:0", "-bootstrap-config", good}, 2, "-bootstrap-dtls and -bootstrap-psk-file go together"},
		{[]string{"-bootstrap", "127.0.0.1:0", "-bootstrap-config", bad}, 1, `endpoints["bs-dev"].servers[0].short_server_id: 0`},
		{[]string{"-bootstrap", "127.0.0.1:0", "-bootstrap-config", filepath.Join(dir, "none.json")}, 1, "-bootstrap-config:"},
		{[]string{"-bootstrap-dtls", "127.0.0.1:0", "-bootstrap-psk-file", badPSK, "-bootstrap-config", good}, 1, "-bootstrap-psk-file: " + badPSK + ": server: bad PSK file: line 1"},
	} {
		code, _, errs := srvRun(t, append(append([]string{}, base...), tc.args...)...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
		if strings.Contains(errs, "00112233445566778899aabbccddeeff") {
			t.Errorf("%v: the key in the output", tc.args)
		}
	}
	code, out, _ := srvRun(t, "bootstrap-history", "-h")
	if code != 0 || !strings.Contains(out, "usage: lwm2m server bootstrap-history [EP]") {
		t.Errorf("bootstrap-history -h: exit %d, %q", code, out)
	}
	if code, _, _ := srvRun(t, "bootstrap-history", "a", "b"); code != 2 {
		t.Errorf("bootstrap-history a b: exit %d, want 2", code)
	}
}

// The program as users run it: "lwm2m server -bootstrap", a device that
// bootstraps, and "lwm2m server bootstrap-history".
func TestServerBootstrapEndToEnd(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bs.json")
	if err := os.WriteFile(cfg, []byte(srvBSConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	psk := filepath.Join(dir, "bs-psk.txt")
	if err := os.WriteFile(psk, []byte("secure-dev-bs:"+hex.EncodeToString(srvBSKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-bootstrap", "127.0.0.1:0", "-bootstrap-config", cfg,
		"-bootstrap-dtls", "127.0.0.1:0", "-bootstrap-psk-file", psk, "-db", filepath.Join(dir, "server.db"))
	defer s.stop()
	line, _, _ := strings.Cut(s.out.String(), "\n")
	var bsAddr, bsDTLS string
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "bootstrap="); ok {
			bsAddr = v
		}
		if v, ok := strings.CutPrefix(f, "bootstrap-dtls="); ok {
			bsDTLS = v
		}
	}
	if bsAddr == "" || bsDTLS == "" {
		t.Fatalf("no bootstrap= or bootstrap-dtls= in %q", line)
	}
	srvBootstrapOverDTLS(t, bsDTLS)

	finished := make(chan struct{}, 1)
	var got []string
	cc, err := coapudp.Dial(bsAddr, options.WithHandlerFunc(func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
		p, _ := r.Options().Path()
		got = append(got, r.Code().String()+" /"+strings.TrimPrefix(p, "/"))
		switch r.Code() {
		case codes.DELETE:
			_ = w.SetResponse(codes.Deleted, message.TextPlain, nil)
		default:
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		}
		if r.Code() == codes.POST {
			finished <- struct{}{}
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ep := range []string{"intruder", "bs-dev"} {
		resp, err := cc.Post(ctx, "/bs", message.TextPlain, nil, message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)})
		if err != nil {
			t.Fatal(err)
		}
		want := codes.Changed
		if ep == "intruder" {
			want = codes.BadRequest
		}
		if resp.Code() != want {
			t.Fatalf("Bootstrap-Request of %s: %v, want %v", ep, resp.Code(), want)
		}
	}
	select {
	case <-finished:
	case <-ctx.Done():
		t.Fatalf("no Bootstrap-Finish; got %v", got)
	}
	if strings.Join(got, ", ") != "DELETE /0, DELETE /1, PUT /0/1, PUT /1/0, POST /bs" {
		t.Fatalf("the device got %v", got)
	}
	var out string
	waitfor.Until(t, 10*time.Second, func() error {
		out = e2eMustCLI(t, s.api, "bootstrap-history")
		if !regexp.MustCompile(`(?m)^bs-dev +finished`).MatchString(out) || !regexp.MustCompile(`(?m)^secure-dev +finished`).MatchString(out) {
			return fmt.Errorf("history:\n%s", out)
		}
		return nil
	})
	if !regexp.MustCompile(`(?m)^bs-dev +finished .* coap +- +1 +-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^secure-dev +finished .* coaps +secure-dev-bs +1 +-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^intruder +refused .* unknown endpoint client name$`).MatchString(out) {
		t.Fatalf("bootstrap-history:\n%s", out)
	}
	out = e2eMustCLI(t, s.api, "bootstrap-history", "bs-dev")
	for _, want := range []string{"bs-dev FINISHED from", "write    /0/1  uri=coaps://127.0.0.1:5684 ssid=3 mode=psk identity=\"bs-dev\" -> 2.04", "finish   /bs   -> 2.04"} {
		if !strings.Contains(out, want) {
			t.Errorf("bootstrap-history bs-dev lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "00112233") || strings.Contains(s.log.String(), "00112233") {
		t.Error("a key in the history or the log")
	}
	if code, _, errs := e2eCLI(t, s.api, "bootstrap-history", "nobody"); code != 1 || !strings.Contains(errs, `no bootstrap attempt of endpoint "nobody"`) {
		t.Errorf("bootstrap-history nobody: exit %d, %q", code, errs)
	}

	// SIGHUP reloads the configuration; a broken file keeps the old one.
	if err := os.WriteFile(cfg, []byte(`{"endpoints": {"late-dev": {}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitfor.Until(t, 10*time.Second, func() error {
		if !strings.Contains(s.log.String(), "bootstrap configuration not reloaded") {
			return fmt.Errorf("no word of the broken file")
		}
		return nil
	})
	if !strings.Contains(s.log.String(), `endpoints[\"late-dev\"].servers: no LwM2M server account`) {
		t.Errorf("the reload error does not name the field:\n%s", s.log.String())
	}
	late := strings.Replace(srvBSConfig, `"bs-dev"`, `"late-dev"`, 1)
	if err := os.WriteFile(cfg, []byte(late), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitfor.Until(t, 10*time.Second, func() error {
		if !strings.Contains(s.log.String(), "bootstrap configuration reloaded") {
			return fmt.Errorf("not reloaded yet")
		}
		return nil
	})
	for ep, want := range map[string]codes.Code{"late-dev": codes.Changed, "bs-dev": codes.BadRequest} {
		resp, err := cc.Post(ctx, "/bs", message.TextPlain, nil, message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)})
		if err != nil || resp.Code() != want {
			t.Errorf("Bootstrap-Request of %s after the reload: %v %v, want %v", ep, resp, err, want)
		}
	}
}

var srvBSKey = []byte("bootstrap psk 16")

// srvBootstrapOverDTLS bootstraps secure-dev over DTLS with its bootstrap
// PSK and waits for Bootstrap-Finish; the session stays open until the
// test ends.
func srvBootstrapOverDTLS(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dtlsconf.Dial(ctx, addr, &dtlsconf.Config{PSKIdentity: []byte("secure-dev-bs"), PSK: srvBSKey, FlightInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	finished := make(chan string, 1)
	var got []string
	cc := coapdtls.Client(conn, options.WithHandlerFunc(func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
		p, _ := r.Options().Path()
		got = append(got, r.Code().String()+" /"+strings.TrimPrefix(p, "/"))
		if r.Code() == codes.DELETE {
			_ = w.SetResponse(codes.Deleted, message.TextPlain, nil)
			return
		}
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		if r.Code() == codes.POST {
			// Close only once the answer to Bootstrap-Finish is out.
			seq := strings.Join(got, ", ")
			responsewriter.AfterWrite(r.Context(), func() { finished <- seq })
		}
	}), options.WithCloseSocket())
	// Open until the test ends: go-coap writes the answer to
	// Bootstrap-Finish asynchronously, and closing at once may drop it.
	t.Cleanup(func() { cc.Close() })
	resp, err := cc.Post(ctx, "/bs", message.TextPlain, nil, message.Option{ID: message.URIQuery, Value: []byte("ep=secure-dev")})
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("Bootstrap-Request over DTLS: %v %v", resp, err)
	}
	select {
	case seq := <-finished:
		if seq != "DELETE /0, DELETE /1, PUT /0/1, PUT /1/0, POST /bs" {
			t.Fatalf("the DTLS device got %s", seq)
		}
	case <-ctx.Done():
		t.Fatal("no Bootstrap-Finish over DTLS")
	}
}

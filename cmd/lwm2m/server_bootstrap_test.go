package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

const srvBSConfig = `{"endpoints": {"bs-dev": {
  "servers": [{"uri": "coaps://127.0.0.1:5684", "short_server_id": 3, "lifetime": 60,
               "security": {"mode": "psk", "identity": "bs-dev", "key": "00112233445566778899aabbccddeeff"}}]}}}`

func TestServerBootstrapFlags(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "bs.json")
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(srvBSConfig), 0o600)
	os.WriteFile(bad, []byte(strings.Replace(srvBSConfig, `"short_server_id": 3`, `"short_server_id": 0`, 1)), 0o600)
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
	s := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-bootstrap", "127.0.0.1:0", "-bootstrap-config", cfg,
		"-db", filepath.Join(dir, "server.db"))
	defer s.stop()
	line, _, _ := strings.Cut(s.out.String(), "\n")
	var bsAddr string
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "bootstrap="); ok {
			bsAddr = v
		}
	}
	if bsAddr == "" {
		t.Fatalf("no bootstrap= in %q", line)
	}

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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
		if !strings.Contains(out, "finished") {
			return fmt.Errorf("history:\n%s", out)
		}
		return nil
	})
	if !regexp.MustCompile(`(?m)^bs-dev +finished .* coap +- +1 +-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^intruder +refused .* unknown endpoint client name$`).MatchString(out) {
		t.Fatalf("bootstrap-history:\n%s", out)
	}
	out = e2eMustCLI(t, s.api, "bootstrap-history", "bs-dev")
	for _, want := range []string{"bs-dev FINISHED from", "write  /0/1  uri=coaps://127.0.0.1:5684 ssid=3 mode=psk identity=\"bs-dev\" -> 2.04", "finish /bs   -> 2.04"} {
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
}

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
)

// e2eDTLSDevice is a minimal LwM2M device over DTLS with a PSK, in this
// process: it completes the handshake with the server at addr and answers
// GET /3/0/3 with version. The handshake error is returned as is.
func e2eDTLSDevice(t *testing.T, addr, identity string, key []byte, version string) (*udpclient.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := dtlsconf.Dial(ctx, addr, &dtlsconf.Config{PSKIdentity: []byte(identity), PSK: key, FlightInterval: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	r := mux.NewRouter()
	r.DefaultHandle(mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) {
		if p, _ := m.Options().Path(); m.Code() == codes.GET && p == "/3/0/3" {
			_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader(version))
			return
		}
		_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
	}))
	cc := coapdtls.Client(conn, options.WithMux(r), options.WithBlockwise(false, 0, 0), options.WithCloseSocket())
	t.Cleanup(func() { cc.Close() })
	return cc, nil
}

// e2eRegister registers ep over cc (Core 6.2.1) and fails the test
// unless the server answers 2.01.
func e2eRegister(t *testing.T, cc *udpclient.Conn, ep string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/rd", message.AppLinkFormat, strings.NewReader("</3/0>"),
		message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)},
		message.Option{ID: message.URIQuery, Value: []byte("lt=300")})
	if err != nil {
		t.Fatalf("register %s over DTLS: %v", ep, err)
	}
	if resp.Code() != codes.Created {
		t.Fatalf("register %s over DTLS: %v", ep, resp.Code())
	}
}

func TestServerDTLSFlags(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("dev1:not-hex\n"), 0o600)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, []byte("# nothing yet\n"), 0o600)
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"coaps without psk-file", []string{"-coaps", "127.0.0.1:0"}, 2, "go together"},
		{"psk-file without coaps", []string{"-psk-file", empty}, 2, "go together"},
		{"missing file", []string{"-coaps", "127.0.0.1:0", "-psk-file", filepath.Join(dir, "none")}, 1, "no such file"},
		{"bad key", []string{"-coaps", "127.0.0.1:0", "-psk-file", bad}, 1, "line 1"},
		{"no credentials", []string{"-coaps", "127.0.0.1:0", "-psk-file", empty}, 1, "no credentials"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"-coap", "127.0.0.1:0", "-api", "127.0.0.1:0"}, c.args...)
			code := runServer(context.Background(), args, &out, &errb)
			if code != c.code || !strings.Contains(errb.String(), c.msg) {
				t.Errorf("exit %d, want %d with %q: %s", code, c.code, c.msg, errb.String())
			}
		})
	}
}

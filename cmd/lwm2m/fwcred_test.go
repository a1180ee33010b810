package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// The -fw-* flags give coaps package downloads their own PSK: a pull from
// libcoap's OpenSSL server succeeds with them and, without them, ends with
// Unsupported protocol (9) for want of credentials.
func TestClientFwPSKFlags(t *testing.T) {
	// runClient is the supervisor; its child is this test binary acting
	// as the program (TestMain).
	t.Setenv("LWM2M_TEST_AS_PROGRAM", "1")
	bin := libcoaptest.NeedBinary(t, "coap-server-openssl")
	port := libcoaptest.StartServer(t, bin, "-k", "fw-secret", "-h", "fwsrv")
	dir := t.TempDir()
	payload := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(payload, bytes.Repeat([]byte("firmware v2 "), 700), 0o600); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "fw.pkg")
	if err := packFile(payload, pkg, "fw", "2.0", nil); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(pkg)
	if err != nil {
		t.Fatal(err)
	}
	libcoaptest.PutFile(t, port, "fw", img)
	uri := fmt.Sprintf("coaps://127.0.0.1:%d/fw", port+1)

	for _, tc := range []struct {
		name  string
		flags []string
		state string
		res   string
	}{
		{"flags", []string{"-fw-psk-identity", "dev", "-fw-psk-key", hex.EncodeToString([]byte("fw-secret"))}, "2", "0"},
		{"none", nil, "0", "9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := lwm2mtest.Start(t, "")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"-endpoint", "fwpsk-" + tc.name, "-server", srv.URI(), "-state-dir", t.TempDir()}, tc.flags...)
			var logs syncbuf.Buffer
			done := make(chan int, 1)
			cctx, stop := context.WithCancel(ctx)
			go func() { done <- runClient(cctx, args, &bytes.Buffer{}, &logs) }()
			defer func() { stop(); <-done }()
			reg, err := srv.WaitRegister(ctx, "fwpsk-"+tc.name)
			if err != nil {
				t.Fatalf("no registration: %v\n%s", err, logs.String())
			}
			r, err := lwm2mtest.Do(ctx, reg.Conn, codes.PUT, "/5/0/1", 0, []byte(uri))
			if err != nil || r.Code != codes.Changed {
				t.Fatalf("write Package URI: %v %v", r.Code, err)
			}
			for {
				st, _ := lwm2mtest.Do(ctx, reg.Conn, codes.GET, "/5/0/3", 0, nil)
				res, _ := lwm2mtest.Do(ctx, reg.Conn, codes.GET, "/5/0/5", 0, nil)
				if string(st.Payload) == tc.state && string(res.Payload) == tc.res {
					return
				}
				if ctx.Err() != nil {
					t.Fatalf("State %q, Result %q; want %s and %s\n%s", st.Payload, res.Payload, tc.state, tc.res, logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// Download credential flags that do not fit together are usage errors.
func TestClientFwCredUsage(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", dir}
	for _, flags := range [][]string{
		{"-fw-psk-identity", "dev"},
		{"-fw-psk-key", "00ff"},
		{"-fw-psk-identity", "dev", "-fw-psk-key", "xyz"},
		{"-fw-cert", "c.pem"},
		{"-fw-key", "k.pem"},
		{"-fw-cert", filepath.Join(dir, "missing.pem"), "-fw-key", filepath.Join(dir, "missing.key")},
		{"-fw-psk-identity", "dev", "-fw-psk-key", "00ff", "-fw-cert", "c.pem", "-fw-key", "k.pem"},
		{"-fw-ca", notPEM},
		{"-fw-ca", filepath.Join(dir, "missing.pem")},
	} {
		var errb bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got := runClient(ctx, append(base, flags...), &bytes.Buffer{}, &errb)
		cancel()
		if got != 2 {
			t.Errorf("lwm2m client %q exited %d, want 2\n%s", flags, got, errb.String())
		}
	}
}

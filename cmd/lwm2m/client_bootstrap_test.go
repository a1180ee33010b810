package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// startProgram runs this test binary as `lwm2m client args...` (TestMain),
// under its supervisor, until stop.
func startProgram(t *testing.T, args ...string) (stop func(), logs *syncbuf.Buffer) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logs = &syncbuf.Buffer{}
	cmd := exec.Command(self, append([]string{"client"}, args...)...)
	cmd.Env = append(os.Environ(), "LWM2M_TEST_AS_PROGRAM=1")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	t.Cleanup(stop)
	return stop, logs
}

// bsProvision is a bootstrap script that deletes everything and writes
// one LwM2M server account: uri, NoSec or PSK (id and key).
func bsProvision(t *testing.T, uri string, id, key []byte) func(context.Context, lwm2mtest.BootstrapRequest) {
	return func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		if resp, err := lwm2mtest.Do(ctx, r.Conn, codes.DELETE, "/", -1, nil); err != nil || resp.Code != codes.Deleted {
			t.Errorf("Bootstrap-Delete /: %v %v", resp.Code, err)
		}
		mode := int64(lwm2m.SecurityNoSec)
		if key != nil {
			mode = int64(lwm2m.SecurityPSK)
		}
		for _, w := range []struct {
			p    model.Path
			recs []model.Record
		}{
			{model.NewPath(0, 1), []model.Record{
				{Path: model.NewPath(0, 1, 0), Value: model.String(uri)},
				{Path: model.NewPath(0, 1, 1), Value: model.Bool(false)},
				{Path: model.NewPath(0, 1, 2), Value: model.Int(mode)},
				{Path: model.NewPath(0, 1, 3), Value: model.Opaque(id)},
				{Path: model.NewPath(0, 1, 5), Value: model.Opaque(key)},
				{Path: model.NewPath(0, 1, 10), Value: model.Int(1)},
			}},
			{model.NewPath(1, 0), []model.Record{
				{Path: model.NewPath(1, 0, 0), Value: model.Int(1)},
				{Path: model.NewPath(1, 0, 1), Value: model.Int(60)},
				{Path: model.NewPath(1, 0, 6), Value: model.Bool(false)},
				{Path: model.NewPath(1, 0, 7), Value: model.String("U")},
			}},
		} {
			body, _ := content.Encode(content.TLV, w.p, w.recs)
			if resp, err := lwm2mtest.Do(ctx, r.Conn, codes.PUT, w.p.String(), int(content.TLV), body); err != nil || resp.Code != codes.Changed {
				t.Errorf("Bootstrap-Write %s: %v %v", w.p, resp.Code, err)
			}
		}
		if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
			t.Errorf("Bootstrap-Finish: %v %v %s", resp.Code, err, resp.Payload)
		}
	}
}

func waitRegistered(t *testing.T, srv *lwm2mtest.Server, ep string, logs fmt.Stringer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := srv.WaitRegister(ctx, ep); err != nil {
		t.Fatalf("%s did not register: %v\n%s", ep, err, logs)
	}
}

func waitBootstrapFinished(t *testing.T, bs *lwm2mtest.BootstrapServer, logs fmt.Stringer) {
	t.Helper()
	select {
	case code := <-bs.Finished:
		if code != codes.Changed {
			t.Fatalf("Bootstrap-Finish answered %v\n%s", code, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no answer to Bootstrap-Finish\n%s", logs)
	}
}

// `lwm2m client -bootstrap` bootstraps, registers with the server it was
// given, keeps the configuration in -state-dir (mode 0600), and after a
// restart registers at once without bootstrapping again.
func TestClientBootstrapOnce(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	bs := lwm2mtest.StartBootstrap(t, bsProvision(t, srv.URI(), nil, nil))
	dir := t.TempDir()
	args := []string{"-endpoint", "cli-bs", "-bootstrap", bs.URI(), "-state-dir", dir}
	stop, logs := startProgram(t, args...)
	waitRegistered(t, srv, "cli-bs", logs)
	waitBootstrapFinished(t, bs, logs)
	stop()
	st, err := os.Stat(filepath.Join(dir, provisioningFile))
	if err != nil {
		t.Fatalf("no %s in -state-dir: %v", provisioningFile, err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", provisioningFile, st.Mode().Perm())
	}
	if n := len(bs.Requests); n != 1 {
		t.Fatalf("%d Bootstrap-Requests, want 1", n)
	}
	<-bs.Requests
	_, logs = startProgram(t, args...)
	waitRegistered(t, srv, "cli-bs", logs)
	if n := len(bs.Requests); n != 0 {
		t.Errorf("the restarted device bootstrapped again\n%s", logs)
	}
}

// `lwm2m client -config FILE` starts from a factory file that names a
// coaps:// bootstrap server with a PSK; the bootstrap provisions a
// coaps:// LwM2M server with another PSK. Neither key is ever logged,
// even with -v.
func TestClientFactoryConfigPSK(t *testing.T) {
	const bsID, bsKey = "cli-bs-id", "bs-secret-key-16"
	const srvID, srvKey = "cli-srv-id", "srv-secret-k-16"
	pskOf := func(id, key string) dtls.ServerOption {
		return dtls.WithPSK(func(got []byte) ([]byte, error) {
			if string(got) != id {
				return nil, errors.New("unknown identity")
			}
			return []byte(key), nil
		})
	}
	srv := lwm2mtest.StartDTLS(t, pskOf(srvID, srvKey), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	bs := lwm2mtest.StartBootstrapDTLS(t, bsProvision(t, srv.URI(), []byte(srvID), []byte(srvKey)),
		pskOf(bsID, bsKey), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	factory := filepath.Join(t.TempDir(), "factory.json")
	content := fmt.Sprintf(`{"security": [{"uri": %q, "bootstrap": true, "mode": "psk", "psk_identity": %q, "psk_key": "%x"}]}`, bs.URI(), bsID, bsKey)
	if err := os.WriteFile(factory, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, logs := startProgram(t, "-endpoint", "cli-factory", "-config", factory, "-state-dir", t.TempDir(), "-v")
	waitRegistered(t, srv.Server, "cli-factory", logs)
	waitBootstrapFinished(t, bs, logs)
	for _, secret := range []string{bsKey, srvKey, fmt.Sprintf("%x", bsKey), fmt.Sprintf("%x", srvKey)} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a key appears in the log:\n%s", logs)
		}
	}
}

// The new flags refuse what cannot work, with exit status 2.
func TestClientBootstrapUsage(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"security": [{"uri": "coap://h:1", "bootstrap": true, "mdoe": 3}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-endpoint", "e", "-state-dir", dir}, "one of -server, -bootstrap and -config"},
		{[]string{"-endpoint", "e", "-state-dir", dir, "-bootstrap", "coaps://127.0.0.1:1"}, "-psk-identity and -psk-key"},
		{[]string{"-endpoint", "e", "-state-dir", dir, "-bootstrap", "ftp://h:1"}, "want coap://HOST:PORT"},
		{[]string{"-endpoint", "e", "-state-dir", dir, "-bootstrap", "coap://h:1", "-psk-identity", "i", "-psk-key", "00"}, "are for a coaps://"},
		{[]string{"-endpoint", "e", "-state-dir", dir, "-bootstrap", "coap://h:1", "-config", bad}, "give one"},
		{[]string{"-endpoint", "e", "-state-dir", dir, "-config", bad}, `unknown field "mdoe"`},
		{[]string{"-endpoint", "e", "-state-dir", dir, "-config", filepath.Join(dir, "missing.json")}, "no such file"},
	} {
		var out, errb bytes.Buffer
		if got := runClient(context.Background(), tc.args, &out, &errb); got != 2 {
			t.Errorf("lwm2m client %q exited %d, want 2\n%s", tc.args, got, errb.String())
		}
		if !strings.Contains(errb.String(), tc.want) {
			t.Errorf("lwm2m client %q: %q does not say %q", tc.args, errb.String(), tc.want)
		}
	}
}

// A factory file may name an LwM2M server directly: the device registers
// with it without bootstrapping.
func TestClientFactoryConfigDirectServer(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	factory := filepath.Join(t.TempDir(), "factory.json")
	content := fmt.Sprintf(`{"security": [{"uri": %q, "short_server_id": 9}], "server": [{"short_server_id": 9, "lifetime": 90}]}`, srv.URI())
	if err := os.WriteFile(factory, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, logs := startProgram(t, "-endpoint", "cli-direct", "-config", factory, "-state-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg, err := srv.WaitRegister(ctx, "cli-direct")
	if err != nil {
		t.Fatalf("no registration: %v\n%s", err, logs)
	}
	if !strings.Contains(strings.Join(reg.Query, "&"), "lt=90") {
		t.Errorf("registered with %v, want the factory lifetime 90", reg.Query)
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
)

func TestClientUsage(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"-h"}, 0},
		{[]string{"--help"}, 0},
		{[]string{}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1"}, 2}, // no -state-dir
		{[]string{"-nonsense"}, 2},
		{[]string{"-endpoint", "e", "-server", "coaps://127.0.0.1:1", "-state-dir", t.TempDir()}, 2}, // coaps without credentials
		{[]string{"-endpoint", "e", "-server", "coaps://127.0.0.1:1", "-state-dir", t.TempDir(), "-psk-identity", "i", "-psk-key", "zz"}, 2},
		{[]string{"-endpoint", "e", "-server", "ftp://127.0.0.1:1", "-state-dir", t.TempDir()}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir(), "-lifetime", "0"}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir(), "-lifetime", "-5"}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir(), "-max-package-size", "0"}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir(), "-block-size", "17"}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir(), "-block-size", "2048"}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir(), "-retries", "-1"}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", notDir}, 2},
		{[]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", filepath.Join(notDir, "sub")}, 2},
	} {
		var out, errb bytes.Buffer
		if got := runClient(context.Background(), tc.args, &out, &errb); got != tc.want {
			t.Errorf("lwm2m client %q exited %d, want %d\n%s", tc.args, got, tc.want, errb.String())
		}
		if tc.want == 2 && !strings.Contains(errb.String(), "lwm2m client") && !strings.Contains(errb.String(), "flag") {
			t.Errorf("lwm2m client %q: no message saying what is wrong: %q", tc.args, errb.String())
		}
		if tc.want == 0 && !strings.Contains(out.String(), "-endpoint") {
			t.Errorf("-h printed %q on stdout", out.String())
		}
	}
}

// SIGINT or SIGTERM (here: the context main cancels on them) de-registers
// and exits 0.
func TestClientDeregistersOnSignal(t *testing.T) {
	// runClient is the supervisor; its child is this test binary acting
	// as the program (TestMain).
	t.Setenv("LWM2M_TEST_AS_PROGRAM", "1")
	srv := lwm2mtest.Start(t, "")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- runClient(ctx, []string{"-endpoint", "sig", "-server", srv.URI(), "-state-dir", dir}, &bytes.Buffer{}, &errb)
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	reg, err := srv.WaitRegister(wctx, "sig")
	if err != nil {
		t.Fatalf("no registration: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // let the client take the 2.01
	cancel()
	for {
		r, err := srv.Next(wctx)
		if err != nil {
			t.Fatalf("no de-registration: %v\n%s", err, errb.String())
		}
		if r.Conn == nil && r.Location == reg.Location {
			break
		}
	}
	if code := <-done; code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err != nil {
		t.Errorf("no /5 state file in -state-dir: %v", err)
	}
}

// The other device-side commands refuse out-of-range values with 2 too.
func TestDemoUsage(t *testing.T) {
	for _, args := range [][]string{{"-timeout", "0s"}, {"-timeout", "-1m"}, {"extra"}} {
		var out, errb bytes.Buffer
		if got := runDemo(context.Background(), args, &out, &errb); got != 2 || errb.Len() == 0 {
			t.Errorf("lwm2m demo %q exited %d, want 2 with a message (%q)", args, got, errb.String())
		}
	}
}

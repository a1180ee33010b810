package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// TestMain lets the test binary act as the lwm2m program, so a device
// process can be this very binary and re-exec it.
func TestMain(m *testing.M) {
	if os.Getenv("LWM2M_TEST_AS_PROGRAM") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// Servers and commands, in this process and in children, share one
	// API token file, never the user's own.
	dir, err := os.MkdirTemp("", "lwm2m-test-token-")
	if err != nil {
		panic(err)
	}
	os.Setenv(srvTokenEnv, filepath.Join(dir, "api-token"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// An upgrade re-execs the test binary: same PID, new firmware version,
// Update Result 1.
func TestUpgradeReexecsTestBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "device.test")
	if err := copyFile(self, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := &server.Server{Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go srv.Serve(ctx)
	t.Cleanup(func() { srv.Close() })

	cmd := exec.Command(exe, "client", "-endpoint", "reexec", "-server", "coap://"+srv.LocalAddr().String(),
		"-state-dir", filepath.Join(dir, "state"), "-firmware-version", "1.0")
	cmd.Env = append(os.Environ(), "LWM2M_TEST_AS_PROGRAM=1")
	var logs syncbuf.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for {
		if _, ok := srv.Registration("reexec"); ok {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("device did not register")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A non-executable payload: installed as firmware.bin, then the
	// program (this test binary) re-execs itself.
	payload := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(payload, []byte("firmware image v2"), 0o600); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "fw.pkg")
	if err := packFile(payload, pkg, "fw", "2.0", nil); err != nil {
		t.Fatal(err)
	}
	res, err := srv.Update(ctx, "reexec", pkg, server.Push, nil)
	if err != nil || res != server.ResultSuccess {
		t.Fatalf("update: %v (%v)", res, err)
	}
	c, err := srv.Read(ctx, "reexec", model.NewPath(3, 0, 3), content.TextPlain)
	if err != nil || string(c.Payload) != "2.0" {
		t.Fatalf("/3/0/3 = %q (%v), want 2.0", c.Payload, err)
	}
	// Both starts log the same PID: the program re-exec'd in place.
	starts := regexp.MustCompile(`msg="device starting".* firmware=(\S+) pid=(\d+)`).FindAllStringSubmatch(logs.String(), -1)
	pid := strconv.Itoa(cmd.Process.Pid)
	if len(starts) != 2 || starts[0][1] != "1.0" || starts[1][1] != "2.0" || starts[0][2] != pid || starts[1][2] != pid {
		t.Fatalf("device starts %q, want 1.0 then 2.0, both pid %s\n%s", starts, pid, logs.String())
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "state", firmwareFile)); string(got) != "firmware image v2" {
		t.Errorf("installed firmware %q", got)
	}
}

// After a re-exec whose installed firmware is not what was meant, the
// device reports Downloaded with Update Result 8.
func TestSettleFailedUpgrade(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, firmwareFile), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("new"))
	b, _ := json.Marshal(installed{Version: "2.0", SHA256: hex.EncodeToString(want[:])})
	if err := os.WriteFile(filepath.Join(dir, pendingFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "settle", Server: "coap://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dev := &fileDevice{dir: dir, exe: filepath.Join(dir, "none"), log: log}
	obj, err := fwupdate.Install(c, dev, fwupdate.Config{Initial: &fwupdate.Persisted{State: fwupdate.StateUpdating}})
	if err != nil {
		t.Fatal(err)
	}
	now := dev.settle(obj, installed{Version: "1.0"})
	if st, res := obj.State(); st != fwupdate.StateDownloaded || res != fwupdate.ResultUpdateFailed {
		t.Fatalf("after a failed upgrade: %v/%v, want Downloaded/Update failed", st, res)
	}
	if now.Version != "1.0" {
		t.Errorf("reports firmware %q, want the old 1.0", now.Version)
	}
}

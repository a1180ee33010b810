package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
)

// SIGTERM ends the real program within a bound whatever it is doing: in
// a DTLS handshake with a silent server (which took 50 s), or registered
// with a server that has gone (De-register unanswered).
func TestClientSIGTERMPromptly(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := func(t *testing.T, args ...string) (*exec.Cmd, *syncbuf.Buffer, chan error) {
		t.Helper()
		var log syncbuf.Buffer
		cmd := exec.Command(self, append([]string{"client", "-endpoint", "sig", "-state-dir", t.TempDir()}, args...)...)
		cmd.Env = append(os.Environ(), "LWM2M_TEST_AS_PROGRAM=1")
		cmd.Stderr = &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		return cmd, &log, done
	}
	term := func(t *testing.T, cmd *exec.Cmd, log *syncbuf.Buffer, done chan error) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			if err != nil {
				t.Errorf("exit: %v\n%s", err, log.String())
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("still running 3 s after SIGTERM\n%s", log.String())
		}
	}
	t.Run("handshake", func(t *testing.T) {
		l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cmd, log, done := start(t, "-server", "coaps://"+l.LocalAddr().String(), "-psk-identity", "dev", "-psk-key", "00112233")
		_ = l.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := l.ReadFrom(make([]byte, 2048)); err != nil {
			t.Fatalf("no ClientHello: %v\n%s", err, log.String())
		}
		term(t, cmd, log, done)
	})
	t.Run("server gone", func(t *testing.T) {
		srv := lwm2mtest.StartRaw(t)
		cmd, log, done := start(t, "-server", srv.URI())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := srv.WaitRegister(ctx); err != nil {
			t.Fatalf("no Register: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond) // let the client take the 2.01
		srv.Close()
		term(t, cmd, log, done)
	})
}

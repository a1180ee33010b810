package coaps_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
)

// Cancelling Run's context during a DTLS handshake with a server that
// never answers ends Run within a second, not when the handshake times
// out a minute later.
func TestCancelDuringHandshake(t *testing.T) {
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	uri := "coaps://" + l.LocalAddr().String()
	dial, err := coaps.NewTransport(coaps.Config{Server: uri, PSKIdentity: []byte(testIdentity), PSK: []byte(testKey)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "cancel", uri, dial)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	// The ClientHello has arrived: the handshake is under way.
	_ = l.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := l.ReadFrom(make([]byte, 2048)); err != nil {
		t.Fatalf("no ClientHello: %v", err)
	}
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("Run returned %v after the cancel, want about a second at most", took)
		}
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running 20 s after its context was cancelled")
	}
}

// A wrong PSK key is reported as soon as the server falls silent after
// the key exchange (pion's server drops the Finished it cannot decrypt),
// not when the handshake times out a minute later.
func TestWrongPSKReportedAtOnce(t *testing.T) {
	s := pskServer(t, nil)
	var logs syncbuf.Buffer
	dial, err := coaps.NewTransport(coaps.Config{Server: s.URI(), PSKIdentity: []byte(testIdentity), PSK: []byte("not-the-key"),
		FlightInterval: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "wrong-key", s.URI(), dial)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitfor.Until(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "PSK key is probably wrong") {
			return fmt.Errorf("nothing said about the PSK 10 s into a handshake with a wrong key:\n%s", logs.String())
		}
		return nil
	})
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("the PSK failure is not logged at Error:\n%s", logs.String())
	}
}

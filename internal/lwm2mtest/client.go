package lwm2mtest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Logger logs through t when the test runs with -v, and nowhere otherwise.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Running is a client run by RunClient.
type Running struct {
	Client *lwm2m.Client
	Reg    Registration
	cancel context.CancelFunc
	done   chan struct{}
}

// Conn is the server's connection to the client.
func (r *Running) Conn() *udpclient.Conn { return r.Reg.Conn }

// Stop ends Run (the client de-registers) and waits for it.
func (r *Running) Stop() {
	r.cancel()
	<-r.done
}

// RunClient runs c until the test ends and waits until it is registered
// with s under endpoint ep.
func RunClient(t testing.TB, s *Server, c *lwm2m.Client, ep string) *Running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Client: c, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); _ = c.Run(ctx) }()
	t.Cleanup(r.Stop)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	reg, err := s.WaitRegister(wctx, ep)
	if err != nil {
		t.Fatalf("lwm2mtest: %s did not register: %v", ep, err)
	}
	r.Reg = reg
	for !c.Registered() && wctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return r
}

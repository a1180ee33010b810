package server

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// stallDevice registers and answers like a device that accepts a
// Package URI and then never downloads it: an update waits until its
// context ends.
type stallDevice struct {
	cc  *udpclient.Conn
	uri chan string
}

func newStallDevice(t *testing.T, server, ep string) *stallDevice {
	d := &stallDevice{uri: make(chan string, 4)}
	cc, err := coapudp.Dial(server, options.WithHandlerFunc(func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
		p, _ := r.Options().Path()
		switch r.Code() {
		case codes.GET:
			v := "0"
			if strings.HasSuffix(p, "5/0/9") {
				v = "2"
			}
			_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader(v))
		default:
			body, _ := r.ReadBody()
			if strings.HasSuffix(p, "5/0/1") && len(body) > 0 {
				d.uri <- string(body)
			}
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	d.cc = cc
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/rd", message.AppLinkFormat, strings.NewReader("</5/0>"),
		message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)})
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("register: %v %v", resp, err)
	}
	return d
}

// TestUpdateWithdrawsImage: whatever way an update ends, its image is no
// longer served.
func TestUpdateWithdrawsImage(t *testing.T) {
	published := func(s *Server, sum [32]byte) bool {
		_, ok := s.imageStore().Lookup(hex.EncodeToString(sum[:8]))
		return ok
	}
	waitGone := func(t *testing.T, s *Server, sum [32]byte) {
		t.Helper()
		waitfor.Until(t, 10*time.Second, func() error {
			if published(s, sum) {
				return errors.New("the image is still published after the update ended")
			}
			return nil
		})
	}
	t.Run("success", func(t *testing.T) {
		s := startServer(t, &Server{})
		newFakeDevice(t, s.LocalAddr().String(), "dev1")
		f, sum := writeImage(t, 3000)
		if _, err := s.Update(ctxT(t), "dev1", f, PullCoAP, nil); err != nil {
			t.Fatal(err)
		}
		waitGone(t, s, sum)
	})
	t.Run("failure", func(t *testing.T) {
		s := startServer(t, &Server{})
		d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
		d.mu.Lock()
		d.failWith = 5
		d.mu.Unlock()
		f, sum := writeImage(t, 3000)
		if _, err := s.Update(ctxT(t), "dev1", f, PullCoAP, nil); err == nil {
			t.Fatal("update succeeded")
		}
		waitGone(t, s, sum)
	})
	stalled := func(t *testing.T) (*Server, *stallDevice, string, [32]byte) {
		s := startServer(t, &Server{})
		d := newStallDevice(t, s.LocalAddr().String(), "dev1")
		f, sum := writeImage(t, 3000)
		return s, d, f, sum
	}
	for _, how := range []string{"timeout", "cancel"} {
		t.Run(how, func(t *testing.T) {
			s, d, f, sum := stalled(t)
			ectx := &expireCtx{Context: ctxT(t), done: make(chan struct{})}
			ctx, cancel := context.WithCancel(ectx)
			defer cancel()
			var wg sync.WaitGroup
			var err error
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err = s.Update(ctx, "dev1", f, PullCoAP, nil)
			}()
			<-d.uri
			if !published(s, sum) {
				t.Error("image not published while the device should fetch it")
			}
			want := context.Canceled
			if how == "cancel" {
				cancel()
			} else {
				ectx.expire()
				want = context.DeadlineExceeded
			}
			wg.Wait()
			if !errors.Is(err, want) {
				t.Fatalf("update: %v, want %v", err, want)
			}
			waitGone(t, s, sum)
		})
	}
}

// TestLogIsTerminalSafe: device-provided strings in the server's log are
// quoted by slog's text handler, so they cannot forge log lines or reach
// the terminal as escape sequences.
func TestLogIsTerminalSafe(t *testing.T) {
	var buf syncbuf.Buffer
	s := startServer(t, &Server{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	newStallDevice(t, s.LocalAddr().String(), "evil\nlevel=ERROR msg=forged\x1b[2J")
	out := buf.String()
	if !strings.Contains(out, `ep="evil\nlevel=ERROR msg=forged\x1b[2J"`) {
		t.Errorf("endpoint not quoted in the log:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "level=ERROR") || strings.Contains(line, "\x1b") {
			t.Errorf("log line %q", line)
		}
	}
}

// TestUpdateChecksBeforeSending: a package that is empty, or a method the
// device's /5/0/9 rules out, is refused at once, before anything reaches
// the device; the log says how each update ended.
func TestUpdateChecksBeforeSending(t *testing.T) {
	var log syncbuf.Buffer
	s := startServer(t, &Server{HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&log, nil))})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 3000)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := s.Update(ctxT(t), "dev1", empty, Push, nil); !errors.Is(err, ErrEmptyPackage) {
		t.Errorf("empty package: %v", err)
	}
	for _, c := range []struct {
		delivery string
		method   Method
	}{{"0", Push}, {"1", PullCoAP}, {"1", PullHTTP}} {
		d.mu.Lock()
		d.res["/5/0/9"] = c.delivery
		d.mu.Unlock()
		_, err := s.Update(ctxT(t), "dev1", f, c.method, nil)
		if !errors.Is(err, ErrDeliveryMethod) || !strings.Contains(err.Error(), "/5/0/9 = "+c.delivery) {
			t.Errorf("/5/0/9 = %s, %v: %v", c.delivery, c.method, err)
		}
	}
	if len(d.firmware()) != 0 || d.get("/5/0/1") != "" {
		t.Errorf("the device was sent something: %d bytes pushed, URI %q", len(d.firmware()), d.get("/5/0/1"))
	}
	d.mu.Lock()
	d.res["/5/0/9"] = "2"
	d.mu.Unlock()
	if _, err := s.Update(ctxT(t), "dev1", f, Push, nil); err != nil {
		t.Errorf("/5/0/9 = 2, push: %v", err)
	}
	out := log.String()
	for _, want := range []string{`msg="firmware update failed" ep=dev1 method=push`, "ErrEmpty", "push only", `msg="firmware update succeeded" ep=dev1 method=push`} {
		if want == "ErrEmpty" {
			want = ErrEmptyPackage.Error()
		}
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// expireCtx is a context whose deadline passes when the test says so:
// a timeout in a known phase, without timing.
type expireCtx struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func (c *expireCtx) Done() <-chan struct{} { return c.done }

func (c *expireCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *expireCtx) expire() { c.once.Do(func() { close(c.done) }) }

// TestUpdateLogsTimeoutAndCancel: the log says an update timed out or
// was cancelled, and in which phase.
func TestUpdateLogsTimeoutAndCancel(t *testing.T) {
	var log syncbuf.Buffer
	s := startServer(t, &Server{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	d := newStallDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 3000)
	ectx := &expireCtx{Context: ctxT(t), done: make(chan struct{})}
	_, err := s.Update(ectx, "dev1", f, PullCoAP, func(p Progress) {
		if p.Phase == "uri" { // the Package URI is written
			ectx.expire()
		}
	})
	if want := "server: update dev1: timed out waiting for the download"; !errors.Is(err, context.DeadlineExceeded) || err.Error() != want {
		t.Errorf("update: %v, want %q", err, want)
	}
	<-d.uri
	ctx, cancel := context.WithCancel(ctxT(t))
	_, err = s.Update(ctx, "dev1", f, PullCoAP, func(p Progress) {
		if p.Phase == "uri" { // the Package URI is written
			cancel()
		}
	})
	if want := "server: update dev1: cancelled waiting for the download"; !errors.Is(err, context.Canceled) || err.Error() != want {
		t.Errorf("update: %v, want %q", err, want)
	}
	out := log.String()
	for _, want := range []string{`msg="firmware update timed out" ep=dev1 method=pull`, `phase="waiting for the download"`, `msg="firmware update cancelled" ep=dev1`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

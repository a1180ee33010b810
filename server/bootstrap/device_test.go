package bootstrap

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
)

// seen is one request the scripted device received.
type seen struct {
	Method  codes.Code
	Path    string
	Format  int // -1 without Content-Format
	Payload []byte
}

func (s seen) String() string { return fmt.Sprintf("%v %s", s.Method, s.Path) }

// device is a scripted LwM2M client on raw go-coap: it sends a
// Bootstrap-Request and answers the server's requests with answer (nil:
// 2.02 to DELETE, 2.04 to anything else); a code of 0 leaves the request
// unanswered.
type device struct {
	t        *testing.T
	cc       *udpclient.Conn
	answer   func(r seen) (codes.Code, string)
	mu       sync.Mutex
	got      []seen
	finished chan struct{} // gets Bootstrap-Finish
}

func newDevice(t *testing.T, answer func(seen) (codes.Code, string)) *device {
	return &device{t: t, answer: answer, finished: make(chan struct{}, 1)}
}

// dial connects the device to a bootstrap server's CoAP address.
func (d *device) dial(addr string) *device {
	cc, err := coapudp.Dial(addr, options.WithHandlerFunc(d.handle))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { cc.Close() })
	d.cc = cc
	return d
}

func (d *device) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	p, _ := r.Options().Path()
	s := seen{Method: r.Code(), Path: "/" + strings.TrimPrefix(p, "/"), Format: -1}
	if cf, err := r.ContentFormat(); err == nil {
		s.Format = int(cf)
	}
	if r.Body() != nil {
		s.Payload, _ = io.ReadAll(r.Body())
	}
	d.mu.Lock()
	d.got = append(d.got, s)
	d.mu.Unlock()
	code, diag := codes.Changed, ""
	if s.Method == codes.DELETE {
		code = codes.Deleted
	}
	if d.answer != nil {
		code, diag = d.answer(s)
	}
	if code == 0 {
		return
	}
	var body io.ReadSeeker
	if diag != "" {
		body = bytes.NewReader([]byte(diag))
	}
	cf := message.TextPlain
	if code == codes.Content {
		cf = message.AppLinkFormat
	}
	_ = w.SetResponse(code, cf, body)
	if s.Method == codes.POST && s.Path == "/bs" {
		// Once the answer is out, so that the test may close the device.
		responsewriter.AfterWrite(r.Context(), func() {
			select {
			case d.finished <- struct{}{}:
			default:
			}
		})
	}
}

// request sends POST /bs with the queries and returns the answer's code
// and Max-Age (0 if none).
func (d *device) request(queries ...string) (codes.Code, uint32) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts []message.Option
	for _, q := range queries {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	resp, err := d.cc.Post(ctx, "/bs", message.TextPlain, nil, opts...)
	if err != nil {
		d.t.Fatalf("Bootstrap-Request: %v", err)
	}
	age, _ := resp.Options().GetUint32(message.MaxAge)
	return resp.Code(), age
}

// waitFinish waits for Bootstrap-Finish.
func (d *device) waitFinish() {
	d.t.Helper()
	select {
	case <-d.finished:
	case <-time.After(10 * time.Second):
		d.t.Fatalf("no Bootstrap-Finish; got %v", d.requests())
	}
}

func (d *device) requests() []seen {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]seen(nil), d.got...)
}

// testLogger logs to t until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	return slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Log(strings.TrimRight(string(b), "\n"))
		}
		return len(b), nil
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// start runs s on loopback until the test ends.
func start(t *testing.T, s *Server) *Server {
	t.Helper()
	if s.Logger == nil {
		s.Logger = testLogger(t)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(context.Background()); close(done) }()
	t.Cleanup(func() { s.Close(); <-done })
	return s
}

// dialDTLS connects the device to a bootstrap server's coaps address.
func (d *device) dialDTLS(addr, identity string, key []byte) (*device, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := dtlsconf.Dial(ctx, addr, &dtlsconf.Config{PSKIdentity: []byte(identity), PSK: key, FlightInterval: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	cc := coapdtls.Client(conn, options.WithHandlerFunc(d.handle), options.WithBlockwise(false, 0, 0), options.WithCloseSocket())
	d.t.Cleanup(func() { cc.Close() })
	d.cc = cc
	return d, nil
}

// Package reliability_test proves the library's reliability promise: an image is
// delivered byte-exact or the device reports an honest failure, a crash at
// any moment leaves a true State, and no input from the network crashes or
// wedges the client. See docs/RELIABILITY.md.
package reliability_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// Shortened CoAP transmission parameters (RFC 7252 §4.8) so that loss
// costs tens of milliseconds, not seconds. MAX_RETRANSMIT is raised so that
// a request survives a long run of losses at 10%.
const (
	ackTimeout    = 20 * time.Millisecond
	maxRetransmit = 8
)

func clientTx() lwm2m.TxParams {
	return lwm2m.TxParams{AckTimeout: ackTimeout, AckRandomFactor: 1.5, MaxRetransmit: maxRetransmit}
}

func downloadTx() download.Request {
	return download.Request{Retries: 3, RetryDelay: 50 * time.Millisecond, Timeout: 5 * time.Second,
		Tx: download.TxParams{AckTimeout: ackTimeout, AckRandomFactor: 1.5, MaxRetransmit: maxRetransmit}}
}

// image returns n seeded pseudo-random bytes.
func image(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 6))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// hashHandlers implements fwupdate.Handlers keeping only a running SHA-256,
// so memory stays flat whatever the image size.
type hashHandlers struct {
	mu       sync.Mutex
	h        hash.Hash
	n        int64
	sum      [32]byte
	finished bool
	opens    int
	resets   int
}

func (m *hashHandlers) StreamOpen(context.Context, string, []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.h, m.n, m.finished = sha256.New(), 0, false
	m.opens++
	return nil
}

func (m *hashHandlers) StreamWrite(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h == nil {
		return fmt.Errorf("write without open")
	}
	m.h.Write(b)
	m.n += int64(len(b))
	return nil
}

func (m *hashHandlers) StreamFinish() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.sum[:], m.h.Sum(nil))
	m.finished = true
	return nil
}

func (m *hashHandlers) Reset() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.h, m.n, m.finished = nil, 0, false
	m.resets++
	return nil
}

func (m *hashHandlers) PerformUpgrade(context.Context) error { return nil }

func (m *hashHandlers) snapshot() (sum [32]byte, n int64, finished bool, opens, resets int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sum, m.n, m.finished, m.opens, m.resets
}

// startServer starts an LwM2M server (on addr, or a free port) whose own
// requests use the shortened transmission parameters.
func startServer(t testing.TB, addr string) *lwm2mtest.Server {
	t.Helper()
	return lwm2mtest.Start(t, addr, lwm2mtest.WithTransmission(ackTimeout, maxRetransmit))
}

// device is a client with the /5 object, run until the test ends.
type device struct {
	t      testing.TB
	ep     string
	c      *lwm2m.Client
	obj    *fwupdate.Object
	h      *hashHandlers
	srv    *lwm2mtest.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func newDevice(t testing.TB, srv *lwm2mtest.Server, serverURI string, log *slog.Logger, fw fwupdate.Config, opts ...func(*lwm2m.Config)) *device {
	t.Helper()
	if log == nil {
		log = lwm2mtest.Logger(t)
	}
	ep := fmt.Sprintf("rel-%d", rand.Uint32())
	cfg := lwm2m.Config{Endpoint: ep, Server: serverURI, Logger: log, Tx: clientTx(),
		RetryMin: 50 * time.Millisecond, RetryMax: 800 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &hashHandlers{}
	if fw.Download.Retries == 0 {
		fw.Download = downloadTx()
	}
	fw.Logger = log
	obj, err := fwupdate.Install(c, h, fw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &device{t: t, ep: ep, c: c, obj: obj, h: h, srv: srv, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(d.done); _ = c.Run(ctx) }()
	t.Cleanup(d.stop)
	return d
}

func (d *device) stop() {
	d.cancel()
	<-d.done
	d.obj.Close()
}

// do sends one request to the device and returns the response.
func (d *device) do(code codes.Code, path string, format int, payload []byte, opts ...message.Option) (lwm2mtest.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return lwm2mtest.Do(ctx, d.srv.WaitConn(ctx, d.ep), code, path, format, payload, opts...)
}

// readInt reads an integer resource as text/plain.
func (d *device) readInt(path string) int {
	d.t.Helper()
	r, err := d.do(codes.GET, path, -1, nil, message.Option{ID: message.Accept, Value: nil})
	if err != nil || r.Code != codes.Content {
		d.t.Fatalf("read %s: %v %v", path, r.Code, err)
	}
	v, err := strconv.Atoi(string(r.Payload))
	if err != nil {
		d.t.Fatalf("read %s: %q", path, r.Payload)
	}
	return v
}

// waitState waits until the server reads /5/0/3 and /5/0/5 as want.
func (d *device) waitState(timeout time.Duration, st fwupdate.State, res fwupdate.Result) {
	d.t.Helper()
	waitfor.Until(d.t, timeout, func() error {
		if s, r := d.readInt("/5/0/3"), d.readInt("/5/0/5"); s != int(st) || r != int(res) {
			return fmt.Errorf("state %d result %d, want %d (%v) result %d (%v)", s, r, st, st, res, res)
		}
		return nil
	})
}

func encodeUint(v uint32) []byte {
	switch {
	case v == 0:
		return nil
	case v < 1<<8:
		return []byte{byte(v)}
	case v < 1<<16:
		return []byte{byte(v >> 8), byte(v)}
	case v < 1<<24:
		return []byte{byte(v >> 16), byte(v >> 8), byte(v)}
	}
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func block1(num int64, more bool) message.Option {
	v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, more)
	return message.Option{ID: message.Block1, Value: encodeUint(v)}
}

// push writes img to /5/0/0 with Block1, as a server does. A block whose
// exchange times out is sent again with a new message ID, which the client
// must acknowledge without storing it twice (RFC 7959 §2.5).
func (d *device) push(img []byte) (codes.Code, int) {
	d.t.Helper()
	var code codes.Code
	resent := 0
	for num := int64(0); num*1024 < int64(len(img)) || num == 0; num++ {
		lo, hi := num*1024, min((num+1)*1024, int64(len(img)))
		for try := 0; ; try++ {
			r, err := d.do(codes.PUT, "/5/0/0", 42, img[lo:hi], block1(num, hi < int64(len(img))))
			if err == nil {
				code = r.Code
				break
			}
			if try == 3 {
				d.t.Fatalf("block %d: %v", num, err)
			}
			resent++
		}
		if code != codes.Continue {
			return code, resent
		}
	}
	return code, resent
}

// countingHandler counts log records by level and message.
type countingHandler struct {
	mu    sync.Mutex
	level slog.Level
	byMsg map[string]int
	byLvl map[slog.Level]int
	lvl   map[string]slog.Level
	next  slog.Handler // optional, for -v
}

func newCounting(next slog.Handler) *countingHandler {
	return &countingHandler{level: slog.LevelDebug, byMsg: map[string]int{}, byLvl: map[slog.Level]int{}, lvl: map[string]slog.Level{}, next: next}
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.byMsg[r.Message]++
	h.byLvl[r.Level]++
	if l, ok := h.lvl[r.Message]; !ok || r.Level > l {
		h.lvl[r.Message] = r.Level
	}
	h.mu.Unlock()
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// levelOf returns the highest level msg was logged at.
func (h *countingHandler) levelOf(msg string) slog.Level {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lvl[msg]
}

// counts returns the records at Info and above, and at Debug.
func (h *countingHandler) counts() (info, debug int, msgs map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for l, n := range h.byLvl {
		if l >= slog.LevelInfo {
			info += n
		} else {
			debug += n
		}
	}
	msgs = map[string]int{}
	for k, v := range h.byMsg {
		msgs[k] = v
	}
	return info, debug, msgs
}

// freeUDPPort returns a loopback UDP address nothing listens on.
func freeUDPPort(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().String()
	c.Close()
	return a
}

package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

// fakeClock is the server's clock in queue tests: a device falls asleep
// when the test moves the clock past the queue window, not after a wait.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// qdev is a scripted raw device: it registers with the queries a test
// gives, answers GET with "v" and records, for every request it gets,
// whether it had sent its wake-up Update by then.
type qdev struct {
	t   *testing.T
	cc  *udpclient.Conn
	loc string

	mu    sync.Mutex
	woke  bool
	gets  int
	early int      // requests that came before the wake-up Update
	seen  []string // "GET /3/0/0", in the order they came
}

func newQdev(t *testing.T, s *Server, query ...string) *qdev {
	d := &qdev{t: t}
	cc, err := coapudp.Dial(s.LocalAddr().String(), options.WithHandlerFunc(d.handle))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	d.cc = cc
	var opts []message.Option
	for _, q := range query {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	resp, err := cc.Post(ctxT(t), "/rd", message.AppLinkFormat, bytes.NewReader([]byte("</3/0>")), opts...)
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("register: %v %v", resp, err)
	}
	d.loc, _ = resp.Options().LocationPath()
	return d
}

func (d *qdev) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	d.mu.Lock()
	if !d.woke {
		d.early++
	}
	if r.Code() == codes.GET {
		d.gets++
	}
	p, _ := r.Options().Path()
	d.seen = append(d.seen, r.Code().String()+" /"+strings.TrimPrefix(p, "/"))
	d.mu.Unlock()
	if r.Code() == codes.GET {
		_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("v")))
		return
	}
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
}

// update sends an Update, as a device does when it wakes.
func (d *qdev) update(query ...string) {
	d.mu.Lock()
	d.woke = true
	d.mu.Unlock()
	var opts []message.Option
	for _, q := range query {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	resp, err := d.cc.Post(ctxT(d.t), d.loc, message.TextPlain, nil, opts...)
	if err != nil || resp.Code() != codes.Changed {
		d.t.Fatalf("update: %v %v", resp, err)
	}
}

func (d *qdev) counts() (gets, early int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gets, d.early
}

// startQueueServer starts a server on a fake clock, with one queue-mode
// device registered and then asleep.
func startQueueServer(t *testing.T, s *Server) (*Server, *qdev, *fakeClock) {
	clk := newFakeClock()
	s.now = clk.Now
	startServer(t, s)
	d := newQdev(t, s, "ep=q1", "lt=600", "lwm2m=1.1", "b=U", "Q")
	if reg, _ := s.Registration("q1"); !reg.Queue {
		t.Fatalf("Register with Q: queue mode not recorded: %+v", reg)
	}
	if s.Asleep("q1") {
		t.Fatal("asleep right after its Register")
	}
	clk.Add(s.queueWindow() + time.Second)
	if !s.Asleep("q1") {
		t.Fatal("awake after the queue window passed")
	}
	return s, d, clk
}

type readResult struct {
	c   Content
	err error
}

func goRead(ctx context.Context, s *Server, ep string) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		c, err := s.Read(ctx, ep, mustPath("/3/0/0"), content.TextPlain)
		ch <- readResult{c, err}
	}()
	return ch
}

func waitQueued(t *testing.T, s *Server, ep string, n int) {
	t.Helper()
	waitfor.Until(t, 10*time.Second, func() error {
		if q := s.Queued(ep); q != n {
			return fmt.Errorf("%d operations queued, want %d", q, n)
		}
		return nil
	})
}

func TestQueueModeReadWaitsForUpdate(t *testing.T) {
	s, d, _ := startQueueServer(t, &Server{})
	res := goRead(ctxT(t), s, "q1")
	waitQueued(t, s, "q1", 1)
	if gets, _ := d.counts(); gets != 0 {
		t.Fatalf("the sleeping device got %d requests", gets)
	}
	d.update()
	r := <-res
	if r.err != nil || string(r.c.Payload) != "v" {
		t.Fatalf("queued read: %q %v", r.c.Payload, r.err)
	}
	if gets, early := d.counts(); gets != 1 || early != 0 {
		t.Errorf("device got %d reads, %d of them before its Update", gets, early)
	}
	// Awake now: the next operation runs at once.
	if _, err := s.Read(ctxT(t), "q1", mustPath("/3/0/0"), content.TextPlain); err != nil {
		t.Fatalf("read while awake: %v", err)
	}
	if s.Queued("q1") != 0 {
		t.Error("operations left queued")
	}
}

func TestQueueModeRunsInOrder(t *testing.T) {
	s, d, _ := startQueueServer(t, &Server{})
	ctx := ctxT(t)
	done := make(chan error, 3)
	go func() { done <- s.Write(ctx, "q1", mustPath("/3/0/14"), content.TextPlain, []byte("+01"), true) }()
	waitQueued(t, s, "q1", 1)
	go func() { done <- s.Execute(ctx, "q1", mustPath("/3/0/4"), "") }()
	waitQueued(t, s, "q1", 2)
	go func() {
		_, err := s.Read(ctx, "q1", mustPath("/3/0/0"), content.TextPlain)
		done <- err
	}()
	waitQueued(t, s, "q1", 3)
	d.update()
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	seen := fmt.Sprint(d.seen)
	d.mu.Unlock()
	if want := "[PUT /3/0/14 POST /3/0/4 GET /3/0/0]"; seen != want {
		t.Errorf("device got %s, want %s", seen, want)
	}
}

func TestQueueModeBound(t *testing.T) {
	s, d, _ := startQueueServer(t, &Server{MaxQueued: 2})
	ctx := ctxT(t)
	a, b := goRead(ctx, s, "q1"), goRead(ctx, s, "q1")
	waitQueued(t, s, "q1", 2)
	_, err := s.Read(ctx, "q1", mustPath("/3/0/0"), content.TextPlain)
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third read on a full queue: %v, want ErrQueueFull", err)
	}
	d.update()
	for _, ch := range []<-chan readResult{a, b} {
		if r := <-ch; r.err != nil {
			t.Fatal(r.err)
		}
	}
	if gets, _ := d.counts(); gets != 2 {
		t.Errorf("device got %d reads, want 2 (the refused one is never sent)", gets)
	}
}

func TestQueueModeExpiry(t *testing.T) {
	s, d, _ := startQueueServer(t, &Server{QueueExpiry: 100 * time.Millisecond})
	_, err := s.Read(ctxT(t), "q1", mustPath("/3/0/0"), content.TextPlain)
	if !errors.Is(err, ErrQueueExpired) {
		t.Fatalf("read of a device that never wakes: %v, want ErrQueueExpired", err)
	}
	if s.Queued("q1") != 0 {
		t.Error("the expired read is still queued")
	}
	d.update()
	if _, err := s.Read(ctxT(t), "q1", mustPath("/3/0/0"), content.TextPlain); err != nil {
		t.Fatal(err)
	}
	if gets, _ := d.counts(); gets != 1 {
		t.Errorf("device got %d reads, want 1: the expired one must not be sent", gets)
	}
}

func TestQueueModeCancelledCallerIsDropped(t *testing.T) {
	s, d, _ := startQueueServer(t, &Server{})
	ctx, cancel := context.WithCancel(ctxT(t))
	res := goRead(ctx, s, "q1")
	waitQueued(t, s, "q1", 1)
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled queued read: %v", r.err)
	}
	if s.Queued("q1") != 0 {
		t.Fatal("the cancelled read is still queued")
	}
	d.update()
	if _, err := s.Read(ctxT(t), "q1", mustPath("/3/0/0"), content.TextPlain); err != nil {
		t.Fatal(err)
	}
	if gets, _ := d.counts(); gets != 1 {
		t.Errorf("device got %d reads, want 1: the cancelled one must not be sent", gets)
	}
}

func TestQueueModeDeregisterFailsQueued(t *testing.T) {
	s, d, _ := startQueueServer(t, &Server{})
	res := goRead(ctxT(t), s, "q1")
	waitQueued(t, s, "q1", 1)
	resp, err := d.cc.Delete(ctxT(t), d.loc)
	if err != nil || resp.Code() != codes.Deleted {
		t.Fatalf("deregister: %v %v", resp, err)
	}
	if r := <-res; !errors.Is(r.err, ErrNotRegistered) {
		t.Fatalf("queued read of a device that left: %v, want ErrNotRegistered", r.err)
	}
}

// Close ends what waits for a sleeping device, even for a caller with no
// deadline: no Update can wake it any more.
func TestQueueModeCloseFailsQueued(t *testing.T) {
	s, _, _ := startQueueServer(t, &Server{})
	res := goRead(context.Background(), s, "q1")
	waitQueued(t, s, "q1", 1)
	s.Close()
	select {
	case r := <-res:
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("queued read when the server closed: %v, want ErrClosed", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a queued read still waits after Close")
	}
	if _, err := s.Read(context.Background(), "q1", mustPath("/3/0/0"), content.TextPlain); !errors.Is(err, ErrClosed) {
		t.Fatalf("read of a sleeping device after Close: %v, want ErrClosed", err)
	}
}

func TestQueueModeBinding10(t *testing.T) {
	s := startServer(t, &Server{})
	d := newQdev(t, s, "ep=old", "lt=600", "lwm2m=1.0", "b=UQ")
	if reg, _ := s.Registration("old"); !reg.Queue {
		t.Fatalf("1.0 binding UQ: queue mode not recorded: %+v", reg)
	}
	d.update("b=U")
	if reg, _ := s.Registration("old"); reg.Queue {
		t.Fatalf("1.0 Update with binding U: still in queue mode: %+v", reg)
	}
	newQdev(t, s, "ep=plain", "lt=600", "lwm2m=1.1", "b=U")
	if reg, _ := s.Registration("plain"); reg.Queue || s.Asleep("plain") {
		t.Fatalf("a plain device taken for a queue-mode one: %+v", reg)
	}
}

// TestQueueModeUpdateWaitsForWakeUp runs a firmware update on a sleeping
// device: nothing reaches it until it wakes, and the update then
// completes.
func TestQueueModeUpdateWaitsForWakeUp(t *testing.T) {
	clk := newFakeClock()
	s := startServer(t, &Server{now: clk.Now})
	d := newFakeDevice(t, s.LocalAddr().String(), "qfw", "Q")
	clk.Add(s.queueWindow() + time.Second)
	if !s.Asleep("qfw") {
		t.Fatal("not asleep")
	}
	pkg := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(pkg, bytes.Repeat([]byte("fw"), 3000), 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   fwobj.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := s.Update(ctxT(t), "qfw", pkg, Push, nil)
		done <- result{r, err}
	}()
	waitQueued(t, s, "qfw", 1)
	if len(d.firmware()) != 0 {
		t.Fatal("the sleeping device got the package")
	}
	// The device wakes and sends an Update first.
	resp, err := d.conn().Post(ctxT(t), d.loc, message.TextPlain, nil)
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("update: %v %v", resp, err)
	}
	r := <-done
	if r.err != nil || r.r != fwobj.ResultSuccess {
		t.Fatalf("update of a queue-mode device: %v %v", r.r, r.err)
	}
	if !bytes.Equal(d.firmware(), bytes.Repeat([]byte("fw"), 3000)) {
		t.Error("package not delivered intact")
	}
	if !strings.Contains(d.loc, "/rd/") {
		t.Errorf("location %q", d.loc)
	}
}

// TestQueueModeSurvivesRestart: a restarted server knows from its Store
// which devices are in queue mode and when they were last seen.
func TestQueueModeSurvivesRestart(t *testing.T) {
	store := &MemoryStore{}
	clk := newFakeClock()
	s1 := &Server{Addr: "127.0.0.1:0", Store: store, now: clk.Now, Logger: testLogger(t)}
	if err := s1.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s1.Serve(ctx) }()
	newQdev(t, s1, "ep=q1", "lt=86400", "lwm2m=1.1", "Q")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	clk.Add(time.Hour)
	s2 := startServer(t, &Server{Store: store, now: clk.Now})
	reg, ok := s2.Registration("q1")
	if !ok || !reg.Queue || reg.LastSeen.IsZero() {
		t.Fatalf("after a restart: %+v %v", reg, ok)
	}
	if !s2.Asleep("q1") {
		t.Error("a device last seen an hour ago is taken to be awake after a restart")
	}
}

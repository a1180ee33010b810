package lwm2m_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// fastTx keeps retransmission tests quick.
var fastTx = lwm2m.TxParams{AckTimeout: 200 * time.Millisecond, MaxRetransmit: 2}

type harness struct {
	t      *testing.T
	srv    *lwm2mtest.Server
	client *lwm2m.Client
	dev    *objects.Device
	reg    lwm2mtest.Registration
	cancel context.CancelFunc
	done   chan struct{}
	reboot atomic.Int32
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start runs a client against a fresh test server; extra objects are added before Run.
func start(t *testing.T, cfg lwm2m.Config, extra ...lwm2m.Object) *harness {
	t.Helper()
	h := &harness{t: t, srv: lwm2mtest.Start(t, "")}
	if cfg.Endpoint == "" {
		cfg.Endpoint = "dev-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	cfg.Server = h.srv.URI()
	if cfg.Tx == (lwm2m.TxParams{}) {
		cfg.Tx = fastTx
	}
	cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.client = c
	h.dev = objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme", ModelNumber: "M1", FirmwareVersion: "1.0", Reboot: func() { h.reboot.Add(1) }})
	for _, o := range append([]lwm2m.Object{h.dev}, extra...) {
		if err := c.AddObject(o); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() { defer close(h.done); _ = c.Run(ctx) }()
	t.Cleanup(h.stop)
	h.reg = h.waitRegister()
	// The server saw the Register; wait until the client saw the answer.
	for deadline := time.Now().Add(5 * time.Second); !c.Registered() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *harness) waitRegister() lwm2mtest.Registration {
	h.t.Helper()
	r, err := h.srv.WaitRegister(h.ctx(), h.client.String()[len("lwm2m.Client("):len(h.client.String())-1])
	if err != nil {
		h.t.Fatalf("no registration: %v", err)
	}
	return r
}

func (h *harness) conn() *udpclient.Conn { return h.reg.Conn }

func (h *harness) do(code codes.Code, path string, format int, payload []byte, opts ...message.Option) lwm2mtest.Response {
	h.t.Helper()
	r, err := lwm2mtest.Do(h.ctx(), h.conn(), code, path, format, payload, opts...)
	if err != nil {
		h.t.Fatalf("%v %s: %v", code, path, err)
	}
	return r
}

func accept(f content.Format) message.Option {
	return coapopt.Uint(message.Accept, uint32(f))
}

func query(kv string) message.Option { return message.Option{ID: message.URIQuery, Value: []byte(kv)} }

func types(p model.Path) (model.Type, bool) {
	switch p {
	case model.NewPath(3, 0, 0), model.NewPath(3, 0, 1), model.NewPath(3, 0, 3), model.NewPath(3, 0, 16):
		return model.TypeString, true
	case model.NewPath(3, 0, 11), model.NewPath(1, 0, 1):
		return model.TypeInteger, true
	}
	return 0, false
}

func TestRegisterPayloadAndQuery(t *testing.T) {
	h := start(t, lwm2m.Config{Lifetime: 300 * time.Second})
	for _, want := range []string{"ep=" + h.reg.Endpoint, "lt=300", "lwm2m=1.1", "b=U"} {
		if !slices.Contains(h.reg.Query, want) {
			t.Errorf("register query %v lacks %q", h.reg.Query, want)
		}
	}
	links, err := corelink.Parse([]byte(h.reg.Links))
	if err != nil {
		t.Fatalf("register payload %q: %v", h.reg.Links, err)
	}
	var targets []string
	for _, l := range links {
		targets = append(targets, l.String())
	}
	got := strings.Join(targets, ",")
	// No ct= for TLV, the default: stock Wakaama refuses ct=11542 with 4.00.
	if want := `</>;rt="oma.lwm2m",</1>;ver=1.1,</1/0>,</3>;ver=1.1,</3/0>`; got != want || h.reg.Links != want {
		t.Errorf("register payload %q, want %q", h.reg.Links, want)
	}
	if strings.Contains(got, "</0") {
		t.Errorf("register payload %q lists the Security object", got)
	}
}

func TestReadFormats(t *testing.T) {
	h := start(t, lwm2m.Config{})
	r := h.do(codes.GET, "/3/0/0", -1, nil)
	if r.Code != codes.Content || r.Format != message.TextPlain || string(r.Payload) != "Acme" {
		t.Fatalf("read /3/0/0 = %v %v %q, want 2.05 text/plain Acme", r.Code, r.Format, r.Payload)
	}
	for _, f := range []content.Format{content.TLV, content.SenMLJSON, content.SenMLCBOR} {
		r := h.do(codes.GET, "/3/0", -1, nil, accept(f))
		if r.Code != codes.Content || content.Format(r.Format) != f {
			t.Fatalf("read /3/0 as %v = %v %v", f, r.Code, r.Format)
		}
		recs, err := content.Decode(f, model.NewPath(3, 0), r.Payload, types)
		if err != nil {
			t.Fatalf("decode %v: %v", f, err)
		}
		var man, ec bool
		for _, rec := range recs {
			if rec.Path == model.NewPath(3, 0, 0) && rec.Value.Str == "Acme" {
				man = true
			}
			if rec.Path == model.NewPath(3, 0, 11, 0) {
				ec = true
			}
		}
		if !man || !ec {
			t.Errorf("%v read of /3/0 lacks manufacturer or error code: %v", f, recs)
		}
	}
	// Without Accept a multi-resource read uses the preferred format.
	if r := h.do(codes.GET, "/3", -1, nil); content.Format(r.Format) != content.TLV {
		t.Errorf("read /3 without Accept: format %v, want TLV", r.Format)
	}
}

func TestErrorCodes(t *testing.T) {
	h := start(t, lwm2m.Config{})
	cases := []struct {
		name   string
		code   codes.Code
		path   string
		format int
		body   []byte
		opts   []message.Option
		want   codes.Code
	}{
		{"unknown object", codes.GET, "/42/0", -1, nil, nil, codes.NotFound},
		{"unknown instance", codes.GET, "/3/7", -1, nil, nil, codes.NotFound},
		{"unknown resource", codes.GET, "/3/0/99", -1, nil, nil, codes.NotFound},
		{"security object", codes.GET, "/0/0", -1, nil, nil, codes.Unauthorized},
		{"write read-only", codes.PUT, "/3/0/0", 0, []byte("x"), nil, codes.MethodNotAllowed},
		{"read executable", codes.GET, "/3/0/4", -1, nil, nil, codes.MethodNotAllowed},
		{"execute readable", codes.POST, "/3/0/0", -1, nil, nil, codes.MethodNotAllowed},
		{"unsupported format", codes.PUT, "/1/0/1", 11543, []byte("{}"), nil, codes.UnsupportedMediaType},
		{"unknown format", codes.PUT, "/1/0/1", 65000, []byte("1"), nil, codes.UnsupportedMediaType},
		{"not acceptable", codes.GET, "/3/0", -1, nil, []message.Option{accept(content.TextPlain)}, codes.NotAcceptable},
		{"bad value", codes.PUT, "/1/0/1", 0, []byte("soon"), nil, codes.BadRequest},
		{"bad exec args", codes.POST, "/3/0/4", 0, []byte("x=y"), nil, codes.BadRequest},
		{"delete object", codes.DELETE, "/3", -1, nil, nil, codes.MethodNotAllowed},
		{"delete not deletable", codes.DELETE, "/3/0", -1, nil, nil, codes.MethodNotAllowed},
		{"bad attribute", codes.PUT, "/3/0/9", -1, nil, []message.Option{query("foo=1")}, codes.BadRequest},
		{"gt on instance", codes.PUT, "/3/0", -1, nil, []message.Option{query("gt=1")}, codes.BadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.code, tc.path, tc.format, tc.body, tc.opts...)
			if r.Code != tc.want {
				t.Errorf("%v %s = %v, want %v", tc.code, tc.path, r.Code, tc.want)
			}
		})
	}
}

func TestWriteLifetimeSendsUpdate(t *testing.T) {
	h := start(t, lwm2m.Config{Lifetime: time.Hour})
	if r := h.do(codes.PUT, "/1/0/1", 0, []byte("120")); r.Code != codes.Changed {
		t.Fatalf("write lifetime: %v", r.Code)
	}
	if r := h.do(codes.GET, "/1/0/1", -1, nil); string(r.Payload) != "120" {
		t.Fatalf("lifetime reads %q after write", r.Payload)
	}
	for {
		up, err := h.srv.Next(h.ctx())
		if err != nil {
			t.Fatal("no Registration Update after the lifetime changed")
		}
		if up.Update && slices.Contains(up.Query, "lt=120") {
			return
		}
	}
}

func TestExecuteReboot(t *testing.T) {
	h := start(t, lwm2m.Config{})
	if r := h.do(codes.POST, "/3/0/4", -1, nil); r.Code != codes.Changed {
		t.Fatalf("execute reboot: %v", r.Code)
	}
	_ = waitfor.Poll(5*time.Second, func() error {
		if h.reboot.Load() == 0 {
			return errors.New("no reboot yet")
		}
		return nil
	})
	if h.reboot.Load() != 1 {
		t.Fatalf("reboot ran %d times, want 1", h.reboot.Load())
	}
	if r := h.do(codes.POST, "/3/0/4", 0, []byte("0='a',1")); r.Code != codes.Changed {
		t.Fatalf("execute with arguments: %v", r.Code)
	}
}

// The client sends Registration Updates on its own. When they are due is
// TestUpdateInterval's (lwm2m package) to check, without a clock: here a
// starved machine could delay the datagram past any bound.
func TestUpdateComesUnasked(t *testing.T) {
	h := start(t, lwm2m.Config{Lifetime: 2 * time.Second})
	for {
		up, err := h.srv.Next(h.ctx())
		if err != nil {
			t.Fatal("no Registration Update")
		}
		if up.Update {
			return
		}
	}
}

func TestReRegisterAfterServerRestart(t *testing.T) {
	h := start(t, lwm2m.Config{Lifetime: 2 * time.Second})
	addr := h.srv.Addr()
	h.srv.Close()
	srv2 := lwm2mtest.Start(t, addr) // same port, no registrations
	ctx := h.ctx()
	r, err := srv2.WaitRegister(ctx, h.reg.Endpoint)
	if err != nil {
		t.Fatalf("client did not register with the restarted server: %v", err)
	}
	if r.Update {
		t.Fatal("expected a fresh Register")
	}
}

func TestReRegisterWhenServerForgets(t *testing.T) {
	h := start(t, lwm2m.Config{Lifetime: time.Hour})
	h.srv.Forget()
	h.client.UpdateRegistration() // the Update gets 4.04
	if _, err := h.srv.WaitRegister(h.ctx(), h.reg.Endpoint); err != nil {
		t.Fatalf("no Register after 4.04 to Update: %v", err)
	}
}

func TestDeregisterOnShutdown(t *testing.T) {
	h := start(t, lwm2m.Config{})
	h.stop()
	for {
		r, err := h.srv.Next(h.ctx())
		if err != nil {
			t.Fatal("no De-register")
		}
		if r.Conn == nil && r.Location == h.reg.Location {
			return
		}
	}
}

// counter is a one-instance object with an integer that tests change.
func counter() *lwm2m.Static {
	o := lwm2m.NewStatic(3300, "", lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRW})
	o.Set(0, 5700, model.Float(10))
	return o
}

func TestObserveNotifiesChanges(t *testing.T) {
	obj := counter()
	h := start(t, lwm2m.Config{}, obj)
	ch, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	first := <-ch
	if string(first.Payload) != "10" {
		t.Fatalf("first response %q", first.Payload)
	}
	obj.Set(0, 5700, model.Float(11.5))
	select {
	case n := <-ch:
		if string(n.Payload) != "11.5" {
			t.Fatalf("notification %q, want 11.5", n.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification after a change")
	}
}

func TestObservePminPmax(t *testing.T) {
	obj := counter()
	h := start(t, lwm2m.Config{}, obj)
	if r := h.do(codes.PUT, "/3300/0/5700", -1, nil, query("pmin=1"), query("pmax=2")); r.Code != codes.Changed {
		t.Fatalf("write attributes: %v", r.Code)
	}
	if r := h.do(codes.GET, "/3300/0", -1, nil, accept(content.LinkFormat)); !strings.Contains(string(r.Payload), "</3300/0/5700>;pmin=1;pmax=2") {
		t.Errorf("discover shows %q", r.Payload)
	}
	ch, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	<-ch
	t0 := time.Now()
	// Two quick changes: pmin holds the notification back, and only the
	// latest value is sent.
	obj.Set(0, 5700, model.Float(1))
	obj.Set(0, 5700, model.Float(2))
	n := <-ch
	if since := time.Since(t0); since < 900*time.Millisecond {
		t.Errorf("notification %v after the change, pmin is 1s", since)
	}
	if string(n.Payload) != "2" {
		t.Errorf("notification %q, want the latest value 2", n.Payload)
	}
	// No change: pmax still sends the value.
	select {
	case n := <-ch:
		if string(n.Payload) != "2" {
			t.Errorf("pmax notification %q", n.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification at pmax")
	}
}

func TestObserveThresholds(t *testing.T) {
	obj := counter()
	h := start(t, lwm2m.Config{}, obj)
	if r := h.do(codes.PUT, "/3300/0/5700", -1, nil, query("st=5")); r.Code != codes.Changed {
		t.Fatalf("write attributes: %v", r.Code)
	}
	ch, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	<-ch
	obj.Set(0, 5700, model.Float(12)) // step 2 < st: no notification
	obj.Set(0, 5700, model.Float(16)) // step 6 >= st
	select {
	case n := <-ch:
		if string(n.Payload) != "16" {
			t.Errorf("notification %q, want 16 (12 is below the step)", n.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification after a step over st")
	}
}

func TestObserveInstanceAndCancel(t *testing.T) {
	obj := counter()
	h := start(t, lwm2m.Config{}, obj)
	ch, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0", accept(content.SenMLJSON))
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	obj.Set(0, 5700, model.Float(3))
	select {
	case n := <-ch:
		if !strings.Contains(string(n.Payload), `"v":3`) {
			t.Errorf("instance notification %s", n.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for an instance observation")
	}
	cancel()
	waitfor.Until(t, 5*time.Second, func() error {
		if n := h.client.Observations(); n != 0 {
			return fmt.Errorf("%d observations after cancel", n)
		}
		return nil
	})
}

func TestCreateDelete(t *testing.T) {
	h := start(t, lwm2m.Config{}, &memObject{id: 4000, vals: map[uint16]string{}})
	payload, err := content.Encode(content.SenMLJSON, model.NewPath(4000), []model.Record{{Path: model.NewPath(4000, 7, 0), Value: model.String("hello")}})
	if err != nil {
		t.Fatal(err)
	}
	r := h.do(codes.POST, "/4000", int(content.SenMLJSON), payload)
	if r.Code != codes.Created {
		t.Fatalf("create: %v", r.Code)
	}
	if r := h.do(codes.GET, "/4000/7/0", -1, nil); string(r.Payload) != "hello" {
		t.Fatalf("created instance reads %v %q", r.Code, r.Payload)
	}
	// The new instance reaches the server in a Registration Update.
	for {
		up, err := h.srv.Next(h.ctx())
		if err != nil {
			t.Fatal("no Update after Create")
		}
		if up.Update && strings.Contains(up.Links, "</4000/7>") {
			break
		}
	}
	if r := h.do(codes.DELETE, "/4000/7", -1, nil); r.Code != codes.Deleted {
		t.Fatalf("delete: %v", r.Code)
	}
	if r := h.do(codes.GET, "/4000/7/0", -1, nil); r.Code != codes.NotFound {
		t.Fatalf("deleted instance reads %v", r.Code)
	}
}

// sink is a StreamWriter that records what arrives.
type sink struct {
	*lwm2m.Static
	mu      sync.Mutex
	data    []byte
	opens   int
	closed  bool
	aborted error
}

type sinkStream struct{ s *sink }

func (s *sink) OpenStream(_ context.Context, _ model.Path, size int64) (lwm2m.Stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if size > 1<<20 {
		return nil, &lwm2m.TooLargeError{Max: 1 << 20}
	}
	s.opens++
	s.data, s.closed, s.aborted = nil, false, nil
	return sinkStream{s}, nil
}
func (w sinkStream) Write(b []byte) error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.data = append(w.s.data, b...)
	return nil
}
func (w sinkStream) Close() error { w.s.mu.Lock(); w.s.closed = true; w.s.mu.Unlock(); return nil }
func (w sinkStream) Abort(err error) {
	w.s.mu.Lock()
	w.s.aborted = err
	w.s.mu.Unlock()
}

func newSink() *sink {
	o := lwm2m.NewStatic(4100, "", lwm2m.Resource{ID: 0, Type: model.TypeOpaque, Ops: lwm2m.OpWrite})
	o.AddInstance(0)
	return &sink{Static: o}
}

func block1(num int64, more bool, szx blockwise.SZX) message.Option {
	return coapopt.Block(message.Block1, szx, num, more)
}

func TestBlock1Stream(t *testing.T) {
	s := newSink()
	h := start(t, lwm2m.Config{}, s)
	img := make([]byte, 3000)
	for i := range img {
		img[i] = byte(i * 7)
	}
	put := func(num int64) lwm2mtest.Response {
		lo, hi := int(num)*1024, min(int(num+1)*1024, len(img))
		return h.do(codes.PUT, "/4100/0/0", int(content.Opaque), img[lo:hi], block1(num, hi < len(img), blockwise.SZX1024))
	}
	if r := put(0); r.Code != codes.Continue {
		t.Fatalf("block 0: %v", r.Code)
	}
	if r := put(1); r.Code != codes.Continue {
		t.Fatalf("block 1: %v", r.Code)
	}
	// A retransmitted block (new message ID) is acknowledged, not stored twice.
	if r := put(1); r.Code != codes.Continue {
		t.Fatalf("block 1 again: %v", r.Code)
	}
	if r := put(2); r.Code != codes.Changed {
		t.Fatalf("last block: %v", r.Code)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed || string(s.data) != string(img) {
		t.Fatalf("stream closed=%v with %d bytes, want the %d-byte image", s.closed, len(s.data), len(img))
	}
}

func TestBlock1GapAndTooLarge(t *testing.T) {
	s := newSink()
	h := start(t, lwm2m.Config{}, s)
	blk := make([]byte, 1024)
	if r := h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk, block1(0, true, blockwise.SZX1024)); r.Code != codes.Continue {
		t.Fatalf("block 0: %v", r.Code)
	}
	if r := h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk, block1(2, true, blockwise.SZX1024)); r.Code != codes.RequestEntityIncomplete {
		t.Fatalf("gap: %v, want 4.08", r.Code)
	}
	s.mu.Lock()
	aborted := s.aborted
	s.mu.Unlock()
	if !errors.Is(aborted, lwm2m.ErrIncomplete) {
		t.Fatalf("stream aborted with %v, want ErrIncomplete", aborted)
	}
	size1 := coapopt.Uint(message.Size1, 4<<20)
	r := h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk, block1(0, true, blockwise.SZX1024), size1)
	if r.Code != codes.RequestEntityTooLarge {
		t.Fatalf("oversized: %v, want 4.13", r.Code)
	}
	v, err := r.Options.GetUint32(message.Size1)
	if err != nil || v != 1<<20 {
		t.Fatalf("4.13 carries Size1=%d (%v), want %d", v, err, 1<<20)
	}
}

func TestDiscover(t *testing.T) {
	h := start(t, lwm2m.Config{})
	r := h.do(codes.GET, "/3", -1, nil, accept(content.LinkFormat))
	if r.Code != codes.Content {
		t.Fatalf("discover: %v", r.Code)
	}
	got := string(r.Payload)
	for _, want := range []string{"</3>;ver=1.1", "</3/0>", "</3/0/0>", "</3/0/11>;dim=1"} {
		if !strings.Contains(got, want) {
			t.Errorf("discover %q lacks %q", got, want)
		}
	}
}

func TestIPv6(t *testing.T) {
	srv := lwm2mtest.Start(t, "[::1]:0")
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "v6", Server: "coap://" + srv.Addr(), Tx: fastTx, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	reg, err := srv.WaitRegister(wctx, "v6")
	if err != nil {
		t.Fatalf("no registration over IPv6: %v", err)
	}
	r, err := lwm2mtest.Do(wctx, reg.Conn, codes.GET, "/1/0/0", -1, nil)
	if err != nil || string(r.Payload) != strconv.Itoa(1) {
		t.Fatalf("read over IPv6: %v %q", err, r.Payload)
	}
}

func TestRegistrationUpdateTrigger(t *testing.T) {
	h := start(t, lwm2m.Config{Lifetime: time.Hour})
	if r := h.do(codes.POST, "/1/0/8", -1, nil); r.Code != codes.Changed {
		t.Fatalf("execute /1/0/8: %v", r.Code)
	}
	for {
		up, err := h.srv.Next(h.ctx())
		if err != nil {
			t.Fatal("no Registration Update after /1/0/8")
		}
		if up.Update {
			return
		}
	}
}

func TestDisable(t *testing.T) {
	h := start(t, lwm2m.Config{Lifetime: time.Hour})
	if r := h.do(codes.PUT, "/1/0/5", 0, []byte("1")); r.Code != codes.Changed {
		t.Fatalf("write Disable Timeout: %v", r.Code)
	}
	if r := h.do(codes.POST, "/1/0/4", -1, nil); r.Code != codes.Changed {
		t.Fatalf("execute /1/0/4: %v", r.Code)
	}
	// De-register, then register again once the Disable Timeout ends.
	var deregistered bool
	for {
		r, err := h.srv.Next(h.ctx())
		if err != nil {
			t.Fatalf("after Disable: de-registered %v, then no Register", deregistered)
		}
		if r.Conn == nil && r.Location == h.reg.Location {
			deregistered = true
			// Disabled, the client no longer serves the server on its
			// old connection (LwM2M 1.1 Core E.2, Disable).
			waitPhase(t, h.client, "disabled")
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			resp, err := lwm2mtest.Do(ctx, h.conn(), codes.GET, "/3/0/0", -1, nil)
			cancel()
			if err == nil {
				t.Fatalf("a disabled client answered on its old connection: %v", resp.Code)
			}
			continue
		}
		if deregistered && !r.Update && r.Conn != nil {
			return
		}
	}
}

// pushSized writes img to /4100/0/0 in blocks of the sizes given, in
// turn, the last one repeated, each at the block number its offset gives (RFC
// 7959 §2.2), and returns
// the answer to the last block sent.
func (h *harness) pushSized(img []byte, sizes []blockwise.SZX) lwm2mtest.Response {
	h.t.Helper()
	var r lwm2mtest.Response
	off := 0
	for i := 0; off < len(img); i++ {
		szx := sizes[min(i, len(sizes)-1)]
		size := int(szx.Size())
		if off%size != 0 {
			h.t.Fatalf("size %d does not divide offset %d", size, off)
		}
		end := min(off+size, len(img))
		r = h.do(codes.PUT, "/4100/0/0", int(content.Opaque), img[off:end], block1(int64(off/size), end < len(img), szx))
		want := codes.Continue
		if end == len(img) {
			want = codes.Changed
		}
		if r.Code != want {
			h.t.Fatalf("block %d (%d bytes at %d): %v, want %v", off/size, size, off, r.Code, want)
		}
		off = end
	}
	return r
}

// RFC 7959 §2.5: the server may change the block size mid-transfer; any
// block that starts at the next byte expected is taken, whatever its
// size. Anjay's BlockVariableChunkSizeTest checks reductions, growth and
// alternating sizes.
func TestBlock1VariableSize(t *testing.T) {
	img := make([]byte, 9000)
	for i := range img {
		img[i] = byte(i*7 + i>>9)
	}
	for name, sizes := range map[string][]blockwise.SZX{
		"reduced":     {blockwise.SZX1024, blockwise.SZX512},
		"grown":       {blockwise.SZX256, blockwise.SZX256, blockwise.SZX512, blockwise.SZX1024},
		"alternating": {blockwise.SZX1024, blockwise.SZX512, blockwise.SZX512, blockwise.SZX1024, blockwise.SZX256, blockwise.SZX256, blockwise.SZX512},
	} {
		t.Run(name, func(t *testing.T) {
			s := newSink()
			h := start(t, lwm2m.Config{}, s)
			// Reduced: block 0 of 1024, then block 2 of 512 at offset 1024.
			// Growth: blocks 0, 1 of 256, then block 1 of 512 at 512.
			h.pushSized(img, sizes)
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.closed || s.aborted != nil || string(s.data) != string(img) {
				t.Fatalf("stream closed=%v aborted=%v with %d bytes, want the %d-byte image", s.closed, s.aborted, len(s.data), len(img))
			}
		})
	}
}

// After a size change, a block at the wrong offset still gets 4.08 (RFC
// 7959 §2.9.2), and a retransmitted block of either size is absorbed.
func TestBlock1VariableSizeDuplicateAndGap(t *testing.T) {
	s := newSink()
	h := start(t, lwm2m.Config{}, s)
	img := make([]byte, 4096)
	for i := range img {
		img[i] = byte(i * 13)
	}
	put := func(szx blockwise.SZX, num int64) codes.Code {
		size := int64(szx.Size())
		return h.do(codes.PUT, "/4100/0/0", int(content.Opaque), img[num*size:(num+1)*size], block1(num, true, szx)).Code
	}
	if c := put(blockwise.SZX1024, 0); c != codes.Continue {
		t.Fatalf("block 0: %v", c)
	}
	if c := put(blockwise.SZX512, 2); c != codes.Continue {
		t.Fatalf("block 2 of 512 at offset 1024: %v", c)
	}
	if c := put(blockwise.SZX512, 2); c != codes.Continue {
		t.Fatalf("block 2 of 512 again: %v", c)
	}
	if c := put(blockwise.SZX256, 5); c != codes.Continue { // 1280..1536: inside what was taken
		t.Fatalf("a retransmission of part of a block taken: %v", c)
	}
	s.mu.Lock()
	n := len(s.data)
	s.mu.Unlock()
	if n != 1536 {
		t.Fatalf("%d bytes stored after retransmissions, want 1536", n)
	}
	// Offset 2048 when 1536 is expected: a gap.
	if c := put(blockwise.SZX1024, 2); c != codes.RequestEntityIncomplete {
		t.Fatalf("block at offset 2048, 1536 expected: %v, want 4.08", c)
	}
	s.mu.Lock()
	aborted := s.aborted
	s.mu.Unlock()
	if !errors.Is(aborted, lwm2m.ErrIncomplete) {
		t.Fatalf("stream aborted with %v, want ErrIncomplete", aborted)
	}
}

// A request larger than one MTU (1472 bytes) is read whole and answered,
// idle or while a block-wise write runs; go-coap's session dropped it
// without an answer.
func TestLargeRequestAnswered(t *testing.T) {
	s := newSink()
	notes := lwm2m.NewStatic(4101, "", lwm2m.Resource{ID: 0, Type: model.TypeString, Ops: lwm2m.OpRW})
	notes.Set(0, 0, model.String(""))
	h := start(t, lwm2m.Config{}, s, notes)
	for _, size := range []int{1500, 10_000, 60_000} {
		v := strings.Repeat("n", size)
		if r := h.do(codes.PUT, "/4101/0/0", int(content.TextPlain), []byte(v)); r.Code != codes.Changed {
			t.Fatalf("idle: %d-byte write: %v, want 2.04", size, r.Code)
		}
		if got, _ := notes.Get(0, 0); got.Str != v {
			t.Fatalf("idle: %d-byte write stored %d bytes", size, len(got.Str))
		}
	}
	// During a block-wise write the session reads differently.
	blk := make([]byte, 1024)
	if r := h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk, block1(0, true, blockwise.SZX1024)); r.Code != codes.Continue {
		t.Fatalf("block 0: %v", r.Code)
	}
	if r := h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk, block1(1, true, blockwise.SZX1024)); r.Code != codes.Continue {
		t.Fatalf("block 1: %v", r.Code)
	}
	v := strings.Repeat("t", 10_000)
	if r := h.do(codes.PUT, "/4101/0/0", int(content.TextPlain), []byte(v)); r.Code != codes.Changed {
		t.Fatalf("during a transfer: 10000-byte write: %v, want 2.04", r.Code)
	}
	if r := h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk[:10], block1(2, false, blockwise.SZX1024)); r.Code != codes.Changed {
		t.Fatalf("last block: %v", r.Code)
	}
}

// A write in one datagram over MaxAssembledWrite gets 4.13 with Size1,
// as a block-wise one does (RFC 7959 §2.9.3).
func TestLargeRequestTooLarge(t *testing.T) {
	notes := lwm2m.NewStatic(4101, "", lwm2m.Resource{ID: 0, Type: model.TypeString, Ops: lwm2m.OpRW})
	notes.Set(0, 0, model.String(""))
	h := start(t, lwm2m.Config{MaxAssembledWrite: 4000}, notes)
	r := h.do(codes.PUT, "/4101/0/0", int(content.TextPlain), []byte(strings.Repeat("n", 10_000)))
	if r.Code != codes.RequestEntityTooLarge {
		t.Fatalf("10000-byte write, limit 4000: %v, want 4.13", r.Code)
	}
	if v, err := r.Options.GetUint32(message.Size1); err != nil || v != 4000 {
		t.Fatalf("Size1 %d (%v), want 4000", v, err)
	}
	if r := h.do(codes.PUT, "/4101/0/0", int(content.TextPlain), []byte(strings.Repeat("n", 4000))); r.Code != codes.Changed {
		t.Fatalf("4000-byte write: %v, want 2.04", r.Code)
	}
}

// Every refusal that ends a write is logged at Warn with its reason, not
// at Debug only; a flood of refusals is cut to one line a code per warnEvery.
func TestRefusalsLogged(t *testing.T) {
	var logs syncbuf.Buffer
	s := newSink()
	h := start(t, lwm2m.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, s)
	blk := make([]byte, 1024)
	// SenML JSON cannot be streamed: 4.15.
	if r := h.do(codes.PUT, "/4100/0/0", int(content.SenMLJSON), blk, block1(0, true, blockwise.SZX1024)); r.Code != codes.UnsupportedMediaType {
		t.Fatalf("SenML block 0: %v, want 4.15", r.Code)
	}
	// A block with no transfer in progress: 4.08.
	if r := h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk, block1(3, true, blockwise.SZX1024)); r.Code != codes.RequestEntityIncomplete {
		t.Fatalf("block 3 alone: %v, want 4.08", r.Code)
	}
	out := logs.String()
	for _, want := range []string{
		`method=PUT path=/4100/0/0 code=4.15 reason="content: unsupported`,
		`method=PUT path=/4100/0/0 code=4.08 reason="lwm2m: request entity incomplete: block 3`,
	} {
		if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
			return strings.Contains(l, `level=WARN msg="request refused"`) && strings.Contains(l, want)
		}) {
			t.Errorf("log lacks a Warn with %s\nlog:\n%s", want, out)
		}
	}
	for range 100 {
		h.do(codes.PUT, "/4100/0/0", int(content.Opaque), blk, block1(3, true, blockwise.SZX1024))
	}
	// One line per code until warnEvery has passed: 4.15 and 4.08.
	if n := strings.Count(logs.String(), "request refused"); n > 2 {
		t.Errorf("%d refusals logged at Info or above for 102 refused requests of two codes; want one a code", n)
	}
}

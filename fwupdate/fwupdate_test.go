package fwupdate_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// memHandlers keeps the package's hash, not its bytes, so memory stays
// flat for any image size.
type memHandlers struct {
	mu        sync.Mutex
	hash      [32]byte
	h         interface{ Sum([]byte) []byte }
	hw        func([]byte)
	n         int64
	opens     []string
	resets    int
	finishErr error
	writeErr  error
	upgrade   func() error
	upgrades  int
	finished  bool
}

func newMem() *memHandlers { return &memHandlers{} }

func (m *memHandlers) StreamOpen(_ context.Context, uri string, etag []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := sha256.New()
	m.h, m.hw, m.n = h, func(b []byte) { h.Write(b) }, 0
	m.opens = append(m.opens, uri)
	m.finished = false
	return nil
}

func (m *memHandlers) StreamWrite(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writeErr != nil {
		return m.writeErr
	}
	m.hw(b)
	m.n += int64(len(b))
	return nil
}

func (m *memHandlers) StreamFinish() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.hash[:], m.h.Sum(nil))
	m.finished = true
	return m.finishErr
}

func (m *memHandlers) Reset() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resets++
	m.n, m.finished = 0, false
	return nil
}

func (m *memHandlers) PerformUpgrade(context.Context) error {
	m.mu.Lock()
	m.upgrades++
	f := m.upgrade
	m.mu.Unlock()
	if f != nil {
		return f()
	}
	return nil
}

func (m *memHandlers) PackageName() string    { return "fw" }
func (m *memHandlers) PackageVersion() string { return "2.0" }

func (m *memHandlers) snapshot() (sum [32]byte, n int64, resets, upgrades int, opens []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hash, m.n, m.resets, m.upgrades, append([]string(nil), m.opens...)
}

type fixture struct {
	t   *testing.T
	srv *lwm2mtest.Server
	run *lwm2mtest.Running
	obj *fwupdate.Object
	h   *memHandlers
}

func setup(t *testing.T, h *memHandlers, cfg fwupdate.Config) *fixture {
	t.Helper()
	srv := lwm2mtest.Start(t, "")
	ep := fmt.Sprintf("fw-%d", rand.Uint32())
	c, err := lwm2m.New(lwm2m.Config{Endpoint: ep, Server: srv.URI(), Logger: lwm2mtest.Logger(t),
		Tx: lwm2m.TxParams{AckTimeout: 300 * time.Millisecond, MaxRetransmit: 3}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = lwm2mtest.Logger(t)
	obj, err := fwupdate.Install(c, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(obj.Close)
	return &fixture{t: t, srv: srv, run: lwm2mtest.RunClient(t, srv, c, ep), obj: obj, h: h}
}

func (f *fixture) do(code codes.Code, path string, format int, payload []byte, opts ...message.Option) codes.Code {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := lwm2mtest.Do(ctx, f.run.Conn(), code, path, format, payload, opts...)
	if err != nil {
		f.t.Fatalf("%v %s: %v", code, path, err)
	}
	return r.Code
}

func (f *fixture) read(path string) string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := lwm2mtest.Do(ctx, f.run.Conn(), codes.GET, path, -1, nil)
	if err != nil || r.Code != codes.Content {
		f.t.Fatalf("read %s: %v %v", path, r.Code, err)
	}
	return string(r.Payload)
}

// waitState waits until /5/0/3 and /5/0/5 read as want.
func (f *fixture) waitState(st fwupdate.State, res fwupdate.Result) {
	f.t.Helper()
	waitfor.Until(f.t, 20*time.Second, func() error {
		s, r := f.read("/5/0/3"), f.read("/5/0/5")
		if s != strconv.Itoa(int(st)) || r != strconv.Itoa(int(res)) {
			return fmt.Errorf("state %s result %s, want %d (%v) and %d (%v)", s, r, st, st, res, res)
		}
		return nil
	})
}

func block1(num int64, more bool) message.Option {
	return coapopt.Block(message.Block1, blockwise.SZX1024, num, more)
}

// push writes img to /5/0/0 block by block, as a server does.
func (f *fixture) push(img []byte) codes.Code {
	f.t.Helper()
	var code codes.Code
	for num := int64(0); num*1024 < int64(len(img)) || num == 0; num++ {
		lo, hi := num*1024, min((num+1)*1024, int64(len(img)))
		code = f.do(codes.PUT, "/5/0/0", 42, img[lo:hi], block1(num, hi < int64(len(img))))
		if code != codes.Continue {
			return code
		}
	}
	return code
}

func image(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// blockingHTTP serves img but holds every response until release is closed.
func blockingHTTP(t *testing.T, img []byte) (url string, release func()) {
	ch := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "fw.bin", time.Time{}, bytes.NewReader(img))
	}))
	t.Cleanup(srv.Close)
	var once sync.Once
	return srv.URL + "/fw.bin", func() { once.Do(func() { close(ch) }) }
}

// Every row of the transition table (state.go, docs/FIRMWARE_UPDATE.md),
// with the CoAP answer.
func TestTransitions(t *testing.T) {
	img := image(3000, 1)
	type step struct {
		code   codes.Code
		path   string
		format int
		body   []byte
		opts   []message.Option
	}
	writeURI := func(u string) step { return step{codes.PUT, "/5/0/1", 0, []byte(u), nil} }
	writePkg := func(b []byte) step { return step{codes.PUT, "/5/0/0", 42, b, nil} }
	small := img[:800] // fits one datagram: no Block1
	firstBlock := step{codes.PUT, "/5/0/0", 42, img[:1024], []message.Option{block1(0, true)}}
	exec := func(res int) step { return step{codes.POST, "/5/0/" + strconv.Itoa(res), -1, nil, nil} }

	cases := []struct {
		name     string
		from     fwupdate.State // Idle, Downloading (a blocked pull), Downloaded or Updating
		op       step
		wantCode codes.Code
		state    fwupdate.State
		result   fwupdate.Result
		reset    bool // Reset must have been called
	}{
		{"idle/small package", fwupdate.StateIdle, writePkg(small), codes.Changed, fwupdate.StateDownloaded, 0, false},
		{"idle/first block", fwupdate.StateIdle, firstBlock, codes.Continue, fwupdate.StateDownloading, 0, false},
		{"idle/unsupported scheme", fwupdate.StateIdle, writeURI("ftp://127.0.0.1/fw"), codes.BadRequest, fwupdate.StateIdle, 9, false},
		{"idle/unparsable uri", fwupdate.StateIdle, writeURI("http//no host"), codes.BadRequest, fwupdate.StateIdle, 7, false},
		{"idle/uri of 10 KB", fwupdate.StateIdle, writeURI("http://127.0.0.1/" + string(bytes.Repeat([]byte("a"), 10_000))), codes.BadRequest, fwupdate.StateIdle, 7, false},
		{"idle/port 0", fwupdate.StateIdle, writeURI("coap://127.0.0.1:0/fw"), codes.BadRequest, fwupdate.StateIdle, 7, false},
		{"idle/port 99999", fwupdate.StateIdle, writeURI("http://127.0.0.1:99999/fw"), codes.BadRequest, fwupdate.StateIdle, 7, false},
		{"idle/port not numeric", fwupdate.StateIdle, writeURI("coaps://127.0.0.1:x1/fw"), codes.BadRequest, fwupdate.StateIdle, 7, false},
		{"idle/uri too long", fwupdate.StateIdle, writeURI("http://127.0.0.1/" + string(bytes.Repeat([]byte("a"), 300))), codes.BadRequest, fwupdate.StateIdle, 7, false},
		{"idle/update", fwupdate.StateIdle, exec(2), codes.MethodNotAllowed, fwupdate.StateIdle, 0, false},
		{"idle/cancel", fwupdate.StateIdle, exec(10), codes.MethodNotAllowed, fwupdate.StateIdle, 0, false},
		{"downloading/empty uri", fwupdate.StateDownloading, writeURI(""), codes.Changed, fwupdate.StateIdle, 0, true},
		{"downloading/zero package", fwupdate.StateDownloading, writePkg([]byte{0}), codes.Changed, fwupdate.StateIdle, 0, true},
		{"downloading/cancel", fwupdate.StateDownloading, exec(10), codes.Changed, fwupdate.StateIdle, 10, true},
		{"downloading/second uri", fwupdate.StateDownloading, writeURI("http://127.0.0.1:1/other"), codes.BadRequest, fwupdate.StateDownloading, 0, false},
		{"downloading/package", fwupdate.StateDownloading, writePkg(small), codes.BadRequest, fwupdate.StateDownloading, 0, false},
		{"downloading/update", fwupdate.StateDownloading, exec(2), codes.MethodNotAllowed, fwupdate.StateDownloading, 0, false},
		{"downloaded/empty package", fwupdate.StateDownloaded, writePkg([]byte{}), codes.Changed, fwupdate.StateIdle, 0, true},
		{"downloaded/empty uri", fwupdate.StateDownloaded, writeURI(""), codes.Changed, fwupdate.StateIdle, 0, true},
		{"downloaded/cancel", fwupdate.StateDownloaded, exec(10), codes.Changed, fwupdate.StateIdle, 10, true},
		{"downloaded/uri", fwupdate.StateDownloaded, writeURI("http://127.0.0.1:1/fw"), codes.BadRequest, fwupdate.StateDownloaded, 0, false},
		{"downloaded/package", fwupdate.StateDownloaded, firstBlock, codes.BadRequest, fwupdate.StateDownloaded, 0, false},
		{"downloaded/update", fwupdate.StateDownloaded, exec(2), codes.Changed, fwupdate.StateUpdating, 0, false},
		{"updating/package", fwupdate.StateUpdating, writePkg(small), codes.MethodNotAllowed, fwupdate.StateUpdating, 0, false},
		{"updating/reset package", fwupdate.StateUpdating, writePkg([]byte{0}), codes.MethodNotAllowed, fwupdate.StateUpdating, 0, false},
		{"updating/uri", fwupdate.StateUpdating, writeURI("http://127.0.0.1:1/fw"), codes.MethodNotAllowed, fwupdate.StateUpdating, 0, false},
		{"updating/empty uri", fwupdate.StateUpdating, writeURI(""), codes.MethodNotAllowed, fwupdate.StateUpdating, 0, false},
		{"updating/cancel", fwupdate.StateUpdating, exec(10), codes.MethodNotAllowed, fwupdate.StateUpdating, 0, false},
		{"updating/update", fwupdate.StateUpdating, exec(2), codes.MethodNotAllowed, fwupdate.StateUpdating, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newMem()
			h.upgrade = func() error { select {} } // an upgrade that never returns, like a re-exec
			cfg := fwupdate.Config{}
			switch tc.from {
			case fwupdate.StateDownloaded, fwupdate.StateUpdating:
				cfg.Initial = &fwupdate.Persisted{State: tc.from}
			}
			f := setup(t, h, cfg)
			if tc.from == fwupdate.StateDownloading {
				u, release := blockingHTTP(t, img)
				t.Cleanup(release)
				if c := f.do(codes.PUT, "/5/0/1", 0, []byte(u)); c != codes.Changed {
					t.Fatalf("start pull: %v", c)
				}
				f.waitState(fwupdate.StateDownloading, 0)
			}
			_, _, resetsBefore, _, _ := h.snapshot()
			if c := f.do(tc.op.code, tc.op.path, tc.op.format, tc.op.body, tc.op.opts...); c != tc.wantCode {
				t.Fatalf("answer %v, want %v", c, tc.wantCode)
			}
			f.waitState(tc.state, tc.result)
			_, _, resets, _, _ := h.snapshot()
			if got := resets > resetsBefore; got != tc.reset {
				t.Errorf("reset called: %v, want %v", got, tc.reset)
			}
		})
	}
}

// The ends of a download and an upgrade, and the results they give.
func TestOutcomes(t *testing.T) {
	img := image(5000, 2)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/fw.bin" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "fw.bin", time.Time{}, bytes.NewReader(img))
	}))
	defer ok.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // nothing listens there now

	cases := []struct {
		name   string
		uri    string
		prep   func(*memHandlers)
		state  fwupdate.State
		result fwupdate.Result
	}{
		{"pull ok", ok.URL + "/fw.bin", nil, fwupdate.StateDownloaded, fwupdate.ResultInitial},
		{"not found", ok.URL + "/nothing", nil, fwupdate.StateIdle, fwupdate.ResultInvalidURI},
		{"connection refused", deadURL + "/fw.bin", nil, fwupdate.StateIdle, fwupdate.ResultConnectionLost},
		{"integrity", ok.URL + "/fw.bin", func(h *memHandlers) { h.finishErr = fwupdate.ErrIntegrity }, fwupdate.StateIdle, fwupdate.ResultIntegrity},
		{"unsupported package", ok.URL + "/fw.bin", func(h *memHandlers) { h.finishErr = fwupdate.ErrUnsupportedPackage }, fwupdate.StateIdle, fwupdate.ResultUnsupportedPackage},
		{"no space", ok.URL + "/fw.bin", func(h *memHandlers) { h.writeErr = fwupdate.ErrNoSpace }, fwupdate.StateIdle, fwupdate.ResultNoSpace},
		{"no memory", ok.URL + "/fw.bin", func(h *memHandlers) { h.writeErr = fwupdate.ErrNoMemory }, fwupdate.StateIdle, fwupdate.ResultNoMemory},
		// fwpkg's verdicts and ENOSPC, returned as they are.
		{"fwpkg not a package", ok.URL + "/fw.bin", func(h *memHandlers) { h.writeErr = fmt.Errorf("header: %w", fwpkg.ErrNotPackage) }, fwupdate.StateIdle, fwupdate.ResultUnsupportedPackage},
		{"fwpkg integrity", ok.URL + "/fw.bin", func(h *memHandlers) { h.writeErr = fwpkg.ErrIntegrity }, fwupdate.StateIdle, fwupdate.ResultIntegrity},
		{"fwpkg too large", ok.URL + "/fw.bin", func(h *memHandlers) { h.writeErr = fwpkg.ErrTooLarge }, fwupdate.StateIdle, fwupdate.ResultNoSpace},
		{"ENOSPC", ok.URL + "/fw.bin", func(h *memHandlers) { h.writeErr = &os.PathError{Op: "write", Path: "fw", Err: syscall.ENOSPC} }, fwupdate.StateIdle, fwupdate.ResultNoSpace},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newMem()
			if tc.prep != nil {
				tc.prep(h)
			}
			f := setup(t, h, fwupdate.Config{Download: downloadFast})
			if c := f.do(codes.PUT, "/5/0/1", 0, []byte(tc.uri)); c != codes.Changed {
				t.Fatalf("write uri: %v", c)
			}
			f.waitState(tc.state, tc.result)
			if tc.state == fwupdate.StateDownloaded {
				sum, _, _, _, _ := h.snapshot()
				if sum != sha256.Sum256(img) {
					t.Fatal("stored image hash differs from the source")
				}
				if f.read("/5/0/6") != "fw" || f.read("/5/0/7") != "2.0" {
					t.Errorf("PkgName/PkgVersion = %q/%q", f.read("/5/0/6"), f.read("/5/0/7"))
				}
			}
		})
	}

	t.Run("upgrade fails", func(t *testing.T) {
		h := newMem()
		h.upgrade = func() error { return fmt.Errorf("flash: %w", fwupdate.ErrUpdateFailed) }
		f := setup(t, h, fwupdate.Config{Initial: &fwupdate.Persisted{State: fwupdate.StateDownloaded}})
		if c := f.do(codes.POST, "/5/0/2", -1, nil); c != codes.Changed {
			t.Fatalf("update: %v", c)
		}
		f.waitState(fwupdate.StateDownloaded, fwupdate.ResultUpdateFailed)
	})
	t.Run("upgrade deferred", func(t *testing.T) {
		h := newMem()
		h.upgrade = func() error { return fwupdate.ErrDeferred }
		f := setup(t, h, fwupdate.Config{Initial: &fwupdate.Persisted{State: fwupdate.StateDownloaded}})
		if c := f.do(codes.POST, "/5/0/2", -1, nil); c != codes.Changed {
			t.Fatalf("update: %v", c)
		}
		f.waitState(fwupdate.StateDownloaded, fwupdate.ResultDeferred)
	})
	t.Run("set result success", func(t *testing.T) {
		f := setup(t, newMem(), fwupdate.Config{Initial: &fwupdate.Persisted{State: fwupdate.StateUpdating}})
		if err := f.obj.SetResult(fwupdate.ResultSuccess); err != nil {
			t.Fatal(err)
		}
		f.waitState(fwupdate.StateIdle, fwupdate.ResultSuccess)
		if err := f.obj.SetResult(fwupdate.ResultSuccess); err == nil {
			t.Error("SetResult outside Updating succeeded")
		}
	})
	t.Run("set result failure", func(t *testing.T) {
		f := setup(t, newMem(), fwupdate.Config{Initial: &fwupdate.Persisted{State: fwupdate.StateUpdating}})
		if err := f.obj.SetResult(fwupdate.ResultUpdateFailed); err != nil {
			t.Fatal(err)
		}
		f.waitState(fwupdate.StateDownloaded, fwupdate.ResultUpdateFailed)
	})
}

var downloadFast = downloadRequest()

func TestPush(t *testing.T) {
	img := image(200_000, 3)
	h := newMem()
	f := setup(t, h, fwupdate.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	notes, stop, err := lwm2mtest.Observe(ctx, f.run.Conn(), "/5/0/3")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if c := f.push(img); c != codes.Changed {
		t.Fatalf("push ended with %v", c)
	}
	f.waitState(fwupdate.StateDownloaded, 0)
	sum, n, _, _, opens := h.snapshot()
	if sum != sha256.Sum256(img) || n != int64(len(img)) {
		t.Fatalf("stored %d bytes, hash match %v", n, sum == sha256.Sum256(img))
	}
	if len(opens) != 1 || opens[0] != "" {
		t.Errorf("StreamOpen calls %q, want one with an empty URI", opens)
	}
	// Observers saw Idle, then Downloading, then Downloaded.
	var seen []string
	for len(seen) < 3 {
		select {
		case n := <-notes:
			seen = append(seen, string(n.Payload))
		case <-ctx.Done():
			t.Fatalf("notifications of /5/0/3: %v", seen)
		}
	}
	if fmt.Sprint(seen) != "[0 1 2]" {
		t.Errorf("State notifications %v, want [0 1 2]", seen)
	}
}

func TestPushDuplicateAndGap(t *testing.T) {
	img := image(4096, 4)
	h := newMem()
	f := setup(t, h, fwupdate.Config{})
	for _, num := range []int64{0, 1, 1, 0} {
		if c := f.do(codes.PUT, "/5/0/0", 42, img[num*1024:(num+1)*1024], block1(num, true)); c != codes.Continue {
			t.Fatalf("block %d: %v", num, c)
		}
		if num == 1 {
			break
		}
	}
	// Block 1 again with a new message ID, then a gap to block 3.
	if c := f.do(codes.PUT, "/5/0/0", 42, img[1024:2048], block1(1, true)); c != codes.Continue {
		t.Fatalf("duplicate block: %v", c)
	}
	_, n, _, _, _ := h.snapshot()
	if n != 2048 {
		t.Fatalf("%d bytes stored after a duplicate block, want 2048", n)
	}
	if c := f.do(codes.PUT, "/5/0/0", 42, img[3072:], block1(3, false)); c != codes.RequestEntityIncomplete {
		t.Fatalf("gap: %v, want 4.08", c)
	}
	f.waitState(fwupdate.StateIdle, 0)
	if _, _, resets, _, _ := h.snapshot(); resets == 0 {
		t.Error("partial image not dropped through Reset")
	}
}

func TestPushTooLarge(t *testing.T) {
	h := newMem()
	f := setup(t, h, fwupdate.Config{MaxPackageSize: 10_000})
	size1 := coapopt.Uint(message.Size1, 20_000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := lwm2mtest.Do(ctx, f.run.Conn(), codes.PUT, "/5/0/0", 42, make([]byte, 1024), block1(0, true), size1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != codes.RequestEntityTooLarge {
		t.Fatalf("answer %v, want 4.13", r.Code)
	}
	if v, err := r.Options.GetUint32(message.Size1); err != nil || v != 10_000 {
		t.Errorf("Size1 %d (%v), want 10000", v, err)
	}
	f.waitState(fwupdate.StateIdle, fwupdate.ResultNoSpace)
	// Without Size1 the limit bites when the data passes it.
	if c := f.push(make([]byte, 12_000)); c != codes.RequestEntityTooLarge {
		t.Fatalf("push over the limit: %v", c)
	}
	f.waitState(fwupdate.StateIdle, fwupdate.ResultNoSpace)
}

func TestPushTextPlainBase64(t *testing.T) {
	img := image(300, 5)
	h := newMem()
	f := setup(t, h, fwupdate.Config{})
	b64 := []byte(base64Std(img))
	if c := f.do(codes.PUT, "/5/0/0", 0, b64); c != codes.Changed {
		t.Fatalf("text/plain package: %v", c)
	}
	f.waitState(fwupdate.StateDownloaded, 0)
	if sum, _, _, _, _ := h.snapshot(); sum != sha256.Sum256(img) {
		t.Fatal("base64 package stored wrongly")
	}
}

// A push the server abandons ends with Connection lost, not in Downloading.
func TestPushAbandoned(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "abandon", Server: srv.URI(), Logger: lwm2mtest.Logger(t), BlockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h := newMem()
	obj, err := fwupdate.Install(c, h, fwupdate.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, srv: srv, run: lwm2mtest.RunClient(t, srv, c, "abandon"), obj: obj, h: h}
	if code := f.do(codes.PUT, "/5/0/0", 42, image(1024, 20), block1(0, true)); code != codes.Continue {
		t.Fatalf("block 0: %v", code)
	}
	f.waitState(fwupdate.StateIdle, fwupdate.ResultConnectionLost)
	if _, _, resets, _, _ := h.snapshot(); resets == 0 {
		t.Error("abandoned package not dropped through Reset")
	}
}

// A deferred upgrade is tried again when Maximum Defer Period runs out.
func TestDeferralRetried(t *testing.T) {
	h := newMem()
	var calls sync.Mutex
	n := 0
	h.upgrade = func() error {
		calls.Lock()
		defer calls.Unlock()
		n++
		if n == 1 {
			return fwupdate.ErrDeferred
		}
		select {} // the second attempt applies the image and never returns
	}
	f := setup(t, h, fwupdate.Config{Initial: &fwupdate.Persisted{State: fwupdate.StateDownloaded}})
	if c := f.do(codes.PUT, "/5/0/13", 0, []byte("1")); c != codes.Changed {
		t.Fatalf("write Maximum Defer Period: %v", c)
	}
	if c := f.do(codes.POST, "/5/0/2", -1, nil); c != codes.Changed {
		t.Fatalf("update: %v", c)
	}
	f.waitState(fwupdate.StateDownloaded, fwupdate.ResultDeferred)
	f.waitState(fwupdate.StateUpdating, fwupdate.ResultInitial)
}

// A coaps download with no credentials at all is an unsupported protocol.
func TestCoAPSWithoutCredentials(t *testing.T) {
	f := setup(t, newMem(), fwupdate.Config{Download: downloadFast})
	if c := f.do(codes.PUT, "/5/0/1", 0, []byte("coaps://127.0.0.1:1/fw")); c != codes.Changed {
		t.Fatalf("write uri: %v", c)
	}
	f.waitState(fwupdate.StateIdle, fwupdate.ResultUnsupportedProtocol)
}

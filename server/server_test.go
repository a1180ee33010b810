package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.ended = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testWriter logs through t until the test ends. go-coap's DTLS server
// may still log from a connection it accepted just before Close (its
// serving goroutines are not waited for), and t.Log after the end of a
// test is a data race.
type testWriter struct {
	t     *testing.T
	mu    sync.Mutex
	ended bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func startServer(t *testing.T, s *Server) *Server {
	t.Helper()
	if s.Addr == "" {
		s.Addr = "127.0.0.1:0"
	}
	if s.Logger == nil {
		s.Logger = testLogger(t)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Cleanup(func() { checkAddrIndex(t, s) }) // runs first: before the server stops
	return s
}

// checkAddrIndex checks that the address index (Send's lookup) holds
// exactly the registrations there are, each at its address, whatever
// registered, moved, re-registered, de-registered or expired in the test.
func checkAddrIndex(t *testing.T, s *Server) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for addr, ids := range s.byAddr {
		for id := range ids {
			n++
			if r := s.regs[id]; r == nil || r.Addr != addr {
				t.Errorf("address index: %s at %s, which is not its registration's address", id, addr)
			}
		}
	}
	if n != len(s.regs) {
		t.Errorf("address index holds %d registrations, the server %d", n, len(s.regs))
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPath(s string) model.Path {
	p, err := model.ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}

func TestRegistrationLifecycle(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	reg, ok := s.Registration("dev1")
	if !ok {
		t.Fatal("not registered")
	}
	if reg.Lifetime != 300 || reg.Version != "1.1" || reg.Binding != "U" || reg.Links != "</1/0>,</3/0>,</5/0>" {
		t.Errorf("registration = %+v", reg)
	}
	if d.loc != "/rd/"+reg.ID {
		t.Errorf("Location-Path %q, want /rd/%s", d.loc, reg.ID)
	}
	ctx := ctxT(t)
	cc := d.conn()

	resp, err := cc.Post(ctx, d.loc, message.TextPlain, nil,
		message.Option{ID: message.URIQuery, Value: []byte("lt=600")})
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("update: %v %v", resp, err)
	}
	if reg, _ := s.Registration("dev1"); reg.Lifetime != 600 {
		t.Errorf("lifetime after update = %d", reg.Lifetime)
	}
	resp, err = cc.Post(ctx, "/rd/nosuchid", message.TextPlain, nil)
	if err != nil || resp.Code() != codes.NotFound {
		t.Fatalf("update of unknown id: %v %v", resp, err)
	}
	resp, err = cc.Delete(ctx, d.loc)
	if err != nil || resp.Code() != codes.Deleted {
		t.Fatalf("deregister: %v %v", resp, err)
	}
	if _, ok := s.Registration("dev1"); ok {
		t.Error("still registered after de-register")
	}
	resp, err = cc.Delete(ctx, d.loc)
	if err != nil || resp.Code() != codes.NotFound {
		t.Fatalf("second deregister: %v %v", resp, err)
	}
	resp, err = cc.Post(ctx, "/rd", message.TextPlain, nil)
	if err != nil || resp.Code() != codes.BadRequest {
		t.Fatalf("register without ep: %v %v", resp, err)
	}
}

func TestReregisterReplaces(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	first, _ := s.Registration("dev1")
	d.register()
	second, _ := s.Registration("dev1")
	if first.ID == second.ID {
		t.Error("re-registration kept the old id")
	}
	if n := len(s.Registrations()); n != 1 {
		t.Errorf("%d registrations, want 1", n)
	}
}

func TestExpiry(t *testing.T) {
	s := startServer(t, &Server{Grace: time.Second})
	newFakeDevice(t, s.LocalAddr().String(), "dev1")
	reg, _ := s.Registration("dev1")
	s.expire(reg.Expires()) // within the grace
	if _, ok := s.Registration("dev1"); !ok {
		t.Fatal("expired before lifetime + grace")
	}
	s.expire(reg.Expires().Add(2 * time.Second))
	if _, ok := s.Registration("dev1"); ok {
		t.Fatal("not expired after lifetime + grace")
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "reg.db")
	st, err := OpenBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	s1 := &Server{Store: st, Addr: "127.0.0.1:0", Logger: testLogger(t)}
	if err := s1.Listen(); err != nil {
		t.Fatal(err)
	}
	go s1.Serve(context.Background())
	addr := s1.LocalAddr().String()
	d := newFakeDevice(t, addr, "dev1")
	reg1, _ := s1.Registration("dev1")
	s1.Close()
	st.Close() // bbolt locks the file; Close leaves the caller's store open

	st2, err := OpenBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() }) // after the server's cleanup, which runs first
	// The same port: the device's socket only talks to that address.
	s2 := startServer(t, &Server{Store: st2, Addr: addr})
	reg2, ok := s2.Registration("dev1")
	if !ok {
		t.Fatal("registration lost across restart")
	}
	if reg2.ID != reg1.ID || reg2.Addr != reg1.Addr || reg2.Links != reg1.Links {
		t.Errorf("after restart %+v, before %+v", reg2, reg1)
	}
	c, err := s2.Read(ctxT(t), "dev1", mustPath("/3/0/0"), content.TextPlain)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Payload) != "Acme" {
		t.Errorf("read %q", c.Payload)
	}
	_ = d
}

func TestReadWriteExecute(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	ctx := ctxT(t)
	c, err := s.Read(ctx, "dev1", mustPath("/3/0/0"), AnyFormat)
	if err != nil || string(c.Payload) != "Acme" || c.Format != content.TextPlain {
		t.Fatalf("read: %+v %v", c, err)
	}
	recs, err := c.Records(mustPath("/3/0/0"))
	if err != nil || len(recs) != 1 || !recs[0].Value.Equal(model.String("Acme")) {
		t.Errorf("records %+v %v", recs, err)
	}
	if err := s.Write(ctx, "dev1", mustPath("/1/0/1"), content.TextPlain, []byte("300"), true); err != nil {
		t.Fatal(err)
	}
	if v := d.get("/1/0/1"); v != "300" {
		t.Errorf("after write /1/0/1 = %q", v)
	}
	if err := s.Execute(ctx, "dev1", mustPath("/3/0/4"), ""); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	execs := d.execs
	d.mu.Unlock()
	if execs != 1 {
		t.Errorf("device saw %d executes", execs)
	}
	_, err = s.Read(ctx, "dev1", mustPath("/3/0/99"), content.TextPlain)
	var ce *CodeError
	if !errors.As(err, &ce) || ce.Code != codes.NotFound {
		t.Errorf("read of a missing resource: %v", err)
	}
	_, err = s.Read(ctx, "nobody", mustPath("/3/0/0"), content.TextPlain)
	if !errors.Is(err, ErrNotRegistered) {
		t.Errorf("read of unknown endpoint: %v", err)
	}
	links, err := s.Discover(ctx, "dev1", mustPath("/3/0/0"))
	if err != nil || len(links) != 1 || links[0].Target != "/3/0/0" {
		t.Errorf("discover: %q %v", links, err)
	}
}

func TestObserve(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	ctx := ctxT(t)
	got := make(chan string, 10)
	o, err := s.Observe(ctx, "dev1", mustPath("/1/0/1"), content.TextPlain, func(n Notification) {
		got <- string(n.Payload)
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "60" {
		t.Errorf("first notification %q", v)
	}
	d.mu.Lock()
	d.setLocked("/1/0/1", "120")
	d.mu.Unlock()
	select {
	case v := <-got:
		if v != "120" {
			t.Errorf("notification %q", v)
		}
	case <-ctx.Done():
		t.Fatal("no notification")
	}
	if err := o.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = s.Observe(ctx, "dev1", mustPath("/9/9/9"), content.TextPlain, func(Notification) {})
	var ce *CodeError
	if !errors.As(err, &ce) || ce.Code != codes.NotFound {
		t.Errorf("observe of a missing resource: %v", err)
	}
}

func writeImage(t *testing.T, n int) (string, [32]byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	f := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f, sha256.Sum256(b)
}

func TestBlock2WithLibcoap(t *testing.T) {
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("coap-client-notls not installed")
		}
		t.Fatal(err)
	}
	s := startServer(t, &Server{})
	for _, size := range []int{0, 1, 1024, 100_000} {
		f, sum := writeImage(t, size)
		im, err := s.Publish(f)
		if err != nil {
			t.Fatal(err)
		}
		// The image socket, which Package URIs name, and the registration
		// socket, which also answers /fw.
		for _, addr := range []net.Addr{s.ImageLocalAddr(), s.LocalAddr()} {
			out := filepath.Join(t.TempDir(), "out.bin")
			cmd := exec.CommandContext(ctxT(t), bin, "-b", "1024", "-o", out,
				"coap://"+addr.String()+"/fw/"+im.ID)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("coap-client: %v %s", err, b)
			}
			got, _ := os.ReadFile(out)
			if sha256.Sum256(got) != sum {
				t.Errorf("size %d from %v: libcoap fetched %d bytes with another hash", size, addr, len(got))
			}
		}
	}
}

// The image socket keeps nothing per request: serving a 32 MiB image
// leaves the heap as it was.
func TestImageSocketFlatMemory(t *testing.T) {
	s := startServer(t, &Server{})
	f, sum := writeImage(t, 32<<20)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h := sha256.New()
	_, err = download.Get(ctxT(t), download.Request{URI: "coap://" + s.ImageLocalAddr().String() + "/fw/" + im.ID}, hashSink{h})
	if err != nil {
		t.Fatal(err)
	}
	if [32]byte(h.Sum(nil)) != sum {
		t.Fatal("image fetched with another hash")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grow := int64(after.HeapInuse) - int64(before.HeapInuse); grow > 4<<20 {
		t.Errorf("heap grew by %d MiB serving a 32 MiB image", grow>>20)
	}
}

type hashSink struct{ h hash.Hash }

func (s hashSink) Open(context.Context, []byte, int64, int64) error { s.h.Reset(); return nil }
func (s hashSink) Write(p []byte) (int, error)                      { return s.h.Write(p) }

func TestBlock2ETagAndSize(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 3000)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for num, want := range []int{512, 512, 512, 512, 512, 440} {
		bv, _ := encodeBlock2(5, num) // SZX 5 is 512 bytes
		resp, err := d.conn().Get(ctx, "/fw/"+im.ID, coapopt.Uint(message.Block2, bv))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := resp.ReadBody()
		etag, _ := resp.ETag()
		size2, _ := resp.Options().GetUint32(message.Size2)
		if len(body) != want || !bytes.Equal(etag, im.ETag) || size2 != 3000 {
			t.Errorf("block %d: %d bytes, etag %x, size2 %d", num, len(body), etag, size2)
		}
	}
	bv, _ := encodeBlock2(5, 6)
	resp, err := d.conn().Get(ctx, "/fw/"+im.ID, coapopt.Uint(message.Block2, bv))
	if err != nil || resp.Code() != codes.BadOption {
		t.Errorf("block past the end: %v %v", resp, err)
	}
}

func TestHTTPRange(t *testing.T) {
	s := startServer(t, &Server{})
	f, _ := writeImage(t, 5000)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(f)
	hs := httptest.NewServer(s.ImageHandler())
	defer hs.Close()
	req, _ := http.NewRequest("GET", hs.URL+"/fw/"+im.ID, nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, whole[1000:2000]) {
		t.Errorf("range: %s, %d bytes", resp.Status, len(body))
	}
	if resp.Header.Get("ETag") == "" {
		t.Error("no ETag")
	}
	resp, err = http.Get(hs.URL + "/fw/unknown")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown image: %s", resp.Status)
	}
}

func TestUpdatePush(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, sum := writeImage(t, 20_000)
	var phases []string
	r, err := s.Update(ctxT(t), "dev1", f, Push, func(p Progress) {
		if p.Phase == "state" {
			phases = append(phases, fmt.Sprintf("state=%d", p.State))
			return
		}
		phases = append(phases, p.Phase)
	})
	if err != nil || r != fwobj.ResultSuccess {
		t.Fatalf("update: %v %v", r, err)
	}
	if sha256.Sum256(d.firmware()) != sum {
		t.Error("device got another image")
	}
	joined := strings.Join(phases, ",")
	for _, p := range []string{"deliver", "execute", "registered", "done"} {
		if !strings.Contains(joined, p) {
			t.Errorf("no %q progress in %s", p, joined)
		}
	}
	// The device notifies Updating when Update is executed, before it
	// restarts: the server reports it, in that order.
	if !strings.Contains(joined, "execute,state=3,registered") {
		t.Errorf("Updating not reported between execute and the new registration: %s", joined)
	}
}

func TestUpdatePull(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, sum := writeImage(t, 20_000)
	r, err := s.Update(ctxT(t), "dev1", f, PullCoAP, nil)
	if err != nil || r != fwobj.ResultSuccess {
		t.Fatalf("update: %v %v", r, err)
	}
	if sha256.Sum256(d.firmware()) != sum {
		t.Error("device got another image")
	}
	if uri := d.get("/5/0/1"); !strings.HasPrefix(uri, "coap://127.0.0.1:") {
		t.Errorf("package URI %q", uri)
	}
}

func TestUpdateFailure(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	d.mu.Lock()
	d.failWith = 8
	d.mu.Unlock()
	f, _ := writeImage(t, 3000)
	r, err := s.Update(ctxT(t), "dev1", f, Push, nil)
	if !errors.Is(err, ErrUpdateFailed) || r != fwobj.ResultUpdateFailed {
		t.Fatalf("update: %v %v", r, err)
	}
}

func TestUpdateMany(t *testing.T) {
	s := startServer(t, &Server{})
	a := newFakeDevice(t, s.LocalAddr().String(), "node-a")
	b := newFakeDevice(t, s.LocalAddr().String(), "node-b")
	newFakeDevice(t, s.LocalAddr().String(), "other")
	b.mu.Lock()
	b.failWith = 5
	b.mu.Unlock()
	f, _ := writeImage(t, 3000)
	res, err := s.UpdateMany(ctxT(t), "node-*", f, PullCoAP, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Endpoint != "node-a" || res[0].Err != nil ||
		res[1].Endpoint != "node-b" || res[1].Result != fwobj.ResultIntegrity {
		t.Errorf("results %+v", res)
	}
	_ = a
}

func encodeBlock2(szx, num int) (uint32, error) {
	return uint32(num<<4 | szx), nil
}

func TestRegisterBadInput(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	ctx := ctxT(t)
	for _, c := range []struct {
		query, body string
	}{
		{"ep=x&lt=abc", "</3/0>"},
		{"ep=x&lt=-1", "</3/0>"},
		{"ep=x", "not a link"},
		{"ep=x", "</3/0"},
	} {
		var opts []message.Option
		for _, q := range strings.Split(c.query, "&") {
			opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
		}
		resp, err := d.conn().Post(ctx, "/rd", message.AppLinkFormat, strings.NewReader(c.body), opts...)
		if err != nil || resp.Code() != codes.BadRequest {
			t.Errorf("%s %q: %v %v", c.query, c.body, resp, err)
		}
	}
	if _, ok := s.Registration("x"); ok {
		t.Error("bad registration accepted")
	}
}

// Close stops the server and leaves the Store it was given open: the
// caller closes what it opened. Cancelling Serve's ctx is the same stop.
func TestCloseLeavesCallerStoreOpen(t *testing.T) {
	for _, how := range []string{"Close", "ctx"} {
		t.Run(how, func(t *testing.T) {
			st, err := OpenBoltStore(filepath.Join(t.TempDir(), "reg.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			s := &Server{Store: st, Addr: "127.0.0.1:0", Logger: testLogger(t)}
			if err := s.Listen(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx) }()
			newFakeDevice(t, s.LocalAddr().String(), "dev1")
			if how == "Close" {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
			} else {
				cancel()
			}
			if err := <-done; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			regs, err := st.List()
			if err != nil {
				t.Fatalf("the caller's store after the server stopped: %v", err)
			}
			if len(regs) != 1 || regs[0].Endpoint != "dev1" {
				t.Errorf("stored registrations %+v", regs)
			}
		})
	}
}

// TestUpdateFailureAfterTransientState: the device's State goes Idle,
// Downloading, Idle (the package fails its check) while its observation
// of State has sent only the first Idle, so it never notifies again (it
// skips intermediate states, RFC 7641 §4.5). A read right after the push
// sees Downloading; the server must not take that as the state to wait
// from. The poll that would correct it is put out of reach: the update
// ends only if the server learns the outcome from the observations.
func TestUpdateFailureAfterTransientState(t *testing.T) {
	s := startServer(t, &Server{statePoll: time.Hour})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	d.mu.Lock()
	d.failLate = true
	d.mu.Unlock()
	f, _ := writeImage(t, 3000)
	var states []string
	r, err := s.Update(ctxT(t), "dev1", f, Push, func(p Progress) {
		if p.Phase == "state" {
			states = append(states, p.State.String()+"/"+p.Result.String())
		}
	})
	if r != fwobj.ResultIntegrity || !errors.Is(err, ErrUpdateFailed) {
		t.Fatalf("update: %v %v (states %v), want Integrity check failure", r, err, states)
	}
}

// TestReadOvertakenByNotification: a poll's answer that a notification
// of the same resource overtook is older than the notification and must
// not replace it.
func TestReadOvertakenByNotification(t *testing.T) {
	var f fwState
	f.changed = make(chan struct{}, 1)
	f.forget()
	mark := f.readMark(pathState)
	f.notified(pathState, int(fwobj.StateDownloaded))
	if f.read(pathState, int(fwobj.StateDownloading), mark) {
		t.Error("an overtaken read was applied")
	}
	if st, _ := f.get(); st != fwobj.StateDownloaded {
		t.Errorf("state %v, want Downloaded", st)
	}
	// A read sent after the notification is newer.
	mark = f.readMark(pathState)
	if !f.read(pathState, int(fwobj.StateIdle), mark) {
		t.Error("a read sent after the last notification was not applied")
	}
	if st, _ := f.get(); st != fwobj.StateIdle {
		t.Errorf("state %v, want Idle", st)
	}
	// Update Result is counted apart.
	mark = f.readMark(pathResult)
	f.notified(pathState, int(fwobj.StateDownloading))
	if !f.read(pathResult, int(fwobj.ResultSuccess), mark) {
		t.Error("a notification of State discarded a read of Update Result")
	}
}

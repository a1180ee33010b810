package lwm2m_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// memFirmware keeps the package in memory, can resume it, and reports a
// successful upgrade as soon as it is asked for one.
type memFirmware struct {
	mu      sync.Mutex
	data    []byte
	resumes []int64
	obj     *fwupdate.Object
}

func (m *memFirmware) StreamOpen(context.Context, string, []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = m.data[:0]
	return nil
}
func (m *memFirmware) StreamResume(_ context.Context, _ string, _ []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int64(len(m.data)) < off {
		return fmt.Errorf("only %d bytes held", len(m.data))
	}
	m.data = m.data[:off]
	m.resumes = append(m.resumes, off)
	return nil
}
func (m *memFirmware) StreamWrite(p []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append(m.data, p...)
	return nil
}
func (m *memFirmware) StreamFinish() error { return nil }
func (m *memFirmware) Reset() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = nil
	return nil
}
func (m *memFirmware) PerformUpgrade(context.Context) error {
	go m.obj.SetResult(fwupdate.ResultSuccess) // the new image "booted"
	return nil
}
func (m *memFirmware) held() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data...)
}

// installFirmware adds /5 over a memFirmware to c.
func installFirmware(t *testing.T, c *lwm2m.Client) (*fwupdate.Object, *memFirmware) {
	t.Helper()
	h := &memFirmware{}
	obj, err := fwupdate.Install(c, h, fwupdate.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h.obj = obj
	return obj, h
}

func waitFirmware(t *testing.T, obj *fwupdate.Object, st fwupdate.State, res fwupdate.Result) {
	t.Helper()
	waitfor.Until(t, 30*time.Second, func() error {
		if s, r := obj.State(); s != st || r != res {
			return fmt.Errorf("state %v/%v, want %v/%v", s, r, st, res)
		}
		return nil
	})
}

// slowImage serves an image over HTTP chunk by chunk, each chunk when
// the test lets one through (allow), so that a pull lasts as long as the
// test wants. It records where each request started.
type slowImage struct {
	data  []byte
	chunk int
	allow chan struct{}

	mu     sync.Mutex
	starts []int64
	served int64 // bytes written so far, over all requests
}

func newSlowImage(size, chunk int) *slowImage {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return &slowImage{data: data, chunk: chunk, allow: make(chan struct{}, 1024)}
}

// let lets n more chunks through.
func (s *slowImage) let(n int) {
	for range n {
		s.allow <- struct{}{}
	}
}

func (s *slowImage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := int64(0)
	if v, ok := strings.CutPrefix(r.Header.Get("Range"), "bytes="); ok {
		start, _ = strconv.ParseInt(strings.TrimSuffix(v, "-"), 10, 64)
	}
	s.mu.Lock()
	s.starts = append(s.starts, start)
	s.mu.Unlock()
	w.Header().Set("ETag", `"v1"`)
	w.Header().Set("Content-Length", strconv.FormatInt(int64(len(s.data))-start, 10))
	if start > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(s.data)-1, len(s.data)))
		w.WriteHeader(http.StatusPartialContent)
	}
	for off := int(start); off < len(s.data); off += s.chunk {
		select {
		case <-s.allow:
		case <-r.Context().Done():
			return
		}
		end := min(off+s.chunk, len(s.data))
		if _, err := w.Write(s.data[off:end]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		s.mu.Lock()
		s.served += int64(end - off)
		s.mu.Unlock()
	}
}

func (s *slowImage) requests() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.starts...)
}

// A server-side operation queued while the device slept runs once the
// device has woken and sent its Update.
func TestQueueModeServerRunsQueuedReadAfterUpdate(t *testing.T) {
	s := startRealServer(t, &server.Server{QueueWindow: 300 * time.Millisecond})
	c := runReal(t, s, queueCfg(), objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme"}))
	if reg, _ := s.Registration("ep"); !reg.Queue {
		t.Fatalf("the server did not see queue mode: %+v", reg)
	}
	waitPhase(t, c, "sleeping")
	waitfor.Until(t, 10*time.Second, func() error {
		if !s.Asleep("ep") {
			return fmt.Errorf("the server thinks the device is awake")
		}
		return nil
	})
	type result struct {
		c   server.Content
		err error
	}
	done := make(chan result, 1)
	go func() {
		got, err := s.Read(t.Context(), "ep", model.NewPath(3, 0, 0), content.TextPlain)
		done <- result{got, err}
	}()
	waitfor.Until(t, 10*time.Second, func() error {
		if n := s.Queued("ep"); n != 1 {
			return fmt.Errorf("%d queued", n)
		}
		return nil
	})
	c.Wake()
	r := <-done
	if r.err != nil || string(r.c.Payload) != "Acme" {
		t.Fatalf("queued Read: %q %v", r.c.Payload, r.err)
	}
}

// An update started with server.Update while the device sleeps waits for
// it and completes with Result 1; the lifetime's Update wakes the device.
// The server takes the device for asleep sooner than the device sleeps,
// as a server should: it never sends what the device cannot hear.
func TestQueueModeServerUpdateWhileAsleep(t *testing.T) {
	s := startRealServer(t, &server.Server{QueueWindow: 300 * time.Millisecond})
	cfg := queueCfg()
	cfg.Lifetime = 2 * time.Second // wakes every second
	cfg.QueueWindow = 500 * time.Millisecond
	var obj *fwupdate.Object
	var fw *memFirmware
	c := runRealWith(t, s, cfg, func(c *lwm2m.Client) {
		obj, fw = installFirmware(t, c)
		c.AddObject(objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme", FirmwareVersion: "1.0"}))
	})
	waitPhase(t, c, "sleeping")
	waitfor.Until(t, 10*time.Second, func() error {
		if !s.Asleep("ep") {
			return fmt.Errorf("the server thinks the device is awake")
		}
		return nil
	})
	pkg := filepath.Join(t.TempDir(), "fw.bin")
	image := bytes.Repeat([]byte("queue-fw"), 4000)
	if err := os.WriteFile(pkg, image, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := s.Update(ctx, "ep", pkg, server.PullCoAP, nil)
	if err != nil || res != 1 {
		t.Fatalf("Update of a sleeping device: result %v, %v", res, err)
	}
	if !bytes.Equal(fw.held(), image) {
		t.Error("package not delivered intact")
	}
	waitFirmware(t, obj, fwupdate.StateIdle, fwupdate.ResultSuccess)
}

// runRealWith is runReal with a setup function that adds objects to the
// client before Run.
func runRealWith(t *testing.T, s *server.Server, cfg lwm2m.Config, setup func(*lwm2m.Client)) *lwm2m.Client {
	t.Helper()
	cfg.Server = "coap://" + s.LocalAddr().String()
	if cfg.Endpoint == "" {
		cfg.Endpoint = "ep"
	}
	if cfg.Tx == (lwm2m.TxParams{}) {
		cfg.Tx = fastTx
	}
	cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	cfg.Logger = testLogger(t)
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	setup(c)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitfor.Until(t, 10*time.Second, func() error {
		if _, ok := s.Registration(cfg.Endpoint); !ok || !c.Registered() {
			return fmt.Errorf("not registered")
		}
		return nil
	})
	return c
}

// A pull download keeps running while the registration sleeps, across
// several sleep periods; the State notifications are sent once awake,
// after an Update, and the update ends with Result 1.
func TestQueueModePullSpansSleeps(t *testing.T) {
	img := newSlowImage(48<<10, 4<<10)
	hs := httptest.NewServer(img)
	defer hs.Close()
	h := start(t, queueCfg())
	obj, fw := installFirmware(t, h.client)
	nextUpdate(t, h) // the object list changed
	awake(t, h)
	states, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/5/0/3")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	<-states
	awake(t, h)
	if r := h.do(codes.PUT, "/5/0/1", 0, []byte(hs.URL+"/fw.bin")); r.Code != codes.Changed {
		t.Fatalf("write Package URI: %v", r.Code)
	}
	if got := recvNotification(t, h, states); got != "1" {
		t.Fatalf("State %q, want Downloading (1)", got)
	}
	for i := range 3 {
		waitPhase(t, h.client, "sleeping")
		img.let(2)
		waitfor.Until(t, 10*time.Second, func() error {
			if n := len(fw.held()); n != (i+1)*8<<10 {
				return fmt.Errorf("%d bytes held", n)
			}
			return nil
		})
		if p := phase(h.client); p != "sleeping" {
			t.Fatalf("the pull woke the registration: phase %q", p)
		}
	}
	h.srv.Pending()
	img.let(1024)
	// Downloaded (2) is due: the device wakes, sends an Update, then it.
	if got := recvNotification(t, h, states); got != "2" {
		t.Fatalf("State %q, want Downloaded (2)", got)
	}
	if ev := h.srv.Pending(); len(ev) == 0 || !ev[0].Update {
		t.Fatalf("no Update before the Downloaded notification: %+v", ev)
	}
	if r := h.do(codes.POST, "/5/0/2", 0, nil); r.Code != codes.Changed {
		t.Fatalf("execute Update: %v", r.Code)
	}
	waitFirmware(t, obj, fwupdate.StateIdle, fwupdate.ResultSuccess)
	if !bytes.Equal(fw.held(), img.data) {
		t.Error("package not delivered intact")
	}
	if n := len(img.requests()); n != 1 {
		t.Errorf("%d HTTP requests, want one pull that went on through the sleeps", n)
	}
}

// A pull that spans an offline period pauses and resumes where it
// stopped, and the update ends with Result 1.
func TestOfflinePullResumesWhereItStopped(t *testing.T) {
	img := newSlowImage(48<<10, 4<<10)
	hs := httptest.NewServer(img)
	defer hs.Close()
	h := start(t, lwm2m.Config{})
	obj, fw := installFirmware(t, h.client)
	nextUpdate(t, h)
	if r := h.do(codes.PUT, "/5/0/1", 0, []byte(hs.URL+"/fw.bin")); r.Code != codes.Changed {
		t.Fatalf("write Package URI: %v", r.Code)
	}
	img.let(4)
	waitfor.Until(t, 10*time.Second, func() error {
		if n := len(fw.held()); n != 16<<10 {
			return fmt.Errorf("%d bytes held", n)
		}
		return nil
	})
	h.client.EnterOffline()
	reached := obj.Persisted().Offset
	if reached != 16<<10 {
		t.Fatalf("offset kept at EnterOffline %d, want %d", reached, 16<<10)
	}
	if s, _ := obj.State(); s != fwupdate.StateDownloading {
		t.Fatalf("state offline %v, want Downloading", s)
	}
	waitPhase(t, h.client, "offline")
	h.client.ExitOffline()
	img.let(1024)
	waitFirmware(t, obj, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	reqs := img.requests()
	if len(reqs) != 2 || reqs[0] != 0 || reqs[1] != reached {
		t.Fatalf("HTTP requests started at %v, want [0 %d]: the pull must resume where it stopped", reqs, reached)
	}
	if !bytes.Equal(fw.held(), img.data) {
		t.Fatal("package not delivered intact")
	}
	if r := h.do(codes.POST, "/5/0/2", 0, nil); r.Code != codes.Changed {
		t.Fatalf("execute Update: %v", r.Code)
	}
	waitFirmware(t, obj, fwupdate.StateIdle, fwupdate.ResultSuccess)
}

// awake makes sure a queue-mode client listens for at least its window.
func awake(t *testing.T, h *harness) {
	t.Helper()
	h.client.Wake()
	waitPhase(t, h.client, "registered")
	h.client.Wake() // the window starts now
}

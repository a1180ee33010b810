package reliability_test

import (
	"context"
	"crypto/sha256"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lossy"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// quickTx gives up on a request after MAX_TRANSMIT_WAIT = 20ms·(2³−1)·1.5.
func quickTx(c *lwm2m.Config) {
	c.Tx = lwm2m.TxParams{AckTimeout: ackTimeout, AckRandomFactor: 1.5, MaxRetransmit: 2}
}

// The LwM2M server forgets the registration, restarts, or answers 5.03:
// the client registers again, backing off while refused.
func TestServerFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("forgets the registration", func(t *testing.T) {
		srv := startServer(t, "")
		d := newDevice(t, srv, srv.URI(), nil, fwupdate.Config{}, quickTx)
		srv.WaitConn(ctx, d.ep)
		srv.Forget()
		d.c.UpdateRegistration() // answered 4.04
		srv.WaitFor(ctx, "a new Register", func() bool { n, _ := srv.Registers(); return n == 2 })
		if st := d.readInt("/5/0/3"); st != 0 {
			t.Errorf("state %d after re-registering", st)
		}
	})

	t.Run("restarts", func(t *testing.T) {
		srv := startServer(t, "")
		addr := srv.Addr()
		d := newDevice(t, srv, srv.URI(), nil, fwupdate.Config{}, quickTx)
		srv.WaitConn(ctx, d.ep)
		srv.Close()
		d.c.UpdateRegistration() // into the void
		time.Sleep(300 * time.Millisecond)
		srv2 := startServer(t, addr)
		d.srv = srv2
		d.c.UpdateRegistration() // the new server has no such registration
		srv2.WaitFor(ctx, "a Register at the restarted server", func() bool { n, _ := srv2.Registers(); return n >= 1 })
		if st := d.readInt("/5/0/3"); st != 0 {
			t.Errorf("state %d after re-registering", st)
		}
	})

	t.Run("answers 5.03", func(t *testing.T) {
		srv := startServer(t, "")
		d := newDevice(t, srv, srv.URI(), nil, fwupdate.Config{}, quickTx)
		srv.WaitConn(ctx, d.ep)
		srv.SetRefuse(codes.ServiceUnavailable)
		srv.Forget()
		d.c.UpdateRegistration()
		srv.WaitFor(ctx, "6 refused Registers", func() bool { _, at := srv.Registers(); return len(at) >= 7 })
		srv.SetRefuse(0)
		srv.WaitFor(ctx, "the Register after 5.03 ends", func() bool { n, _ := srv.Registers(); return n == 2 })
		_, at := srv.Registers()
		var gaps []time.Duration
		for i := 2; i < len(at); i++ { // at[0] is the first registration, at[1] the first refused one
			gaps = append(gaps, at[i].Sub(at[i-1]))
		}
		t.Logf("gaps between Register attempts while refused: %v", gaps)
		// Backoff doubles from RetryMin = 50 ms with jitter in [d/2, d):
		// the fourth wait is at least 200 ms, the first under 50 ms plus
		// one exchange.
		if len(gaps) < 4 || gaps[3] <= gaps[0] {
			t.Errorf("retries do not back off: %v", gaps)
		}
	})
}

// cutAfter wraps a ResponseWriter so that the response breaks off after n
// bytes of body, as when the image server dies mid-transfer.
type cutAfter struct {
	http.ResponseWriter
	n     int
	onCut func()
}

func (c *cutAfter) Write(b []byte) (int, error) {
	if len(b) > c.n {
		_, _ = c.ResponseWriter.Write(b[:c.n])
		_ = http.NewResponseController(c.ResponseWriter).Flush()
		if c.onCut != nil {
			c.onCut()
		}
		panic(http.ErrAbortHandler) // the server drops the connection
	}
	c.n -= len(b)
	return c.ResponseWriter.Write(b)
}

// imageHTTP serves an image whose content and ETag the test controls.
type imageHTTP struct {
	mu     sync.Mutex
	img    []byte
	etag   string
	cut    int    // break the next response off after this many bytes; 0 for none
	onCut  func() // called at the cut
	ranges []string
}

func (h *imageHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	img, etag, cut, onCut := h.img, h.etag, h.cut, h.onCut
	h.cut, h.onCut = 0, nil
	h.ranges = append(h.ranges, r.Header.Get("Range"))
	h.mu.Unlock()
	w.Header().Set("ETag", etag)
	if cut > 0 {
		w = &cutAfter{ResponseWriter: w, n: cut, onCut: onCut}
	}
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(img)))
}

func serveHTTP(t *testing.T, addr string, h http.Handler) (*http.Server, string) {
	t.Helper()
	var l net.Listener
	var err error
	for range 50 {
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return s, l.Addr().String()
}

func retrying() fwupdate.Config {
	dl := downloadTx()
	dl.Retries, dl.RetryDelay = 20, 100*time.Millisecond
	return fwupdate.Config{Download: dl}
}

// The image server dies mid-transfer and comes back within the retry
// budget: the download resumes where it stood and ends byte-exact.
func TestImageServerDiesHTTP(t *testing.T) {
	img := image(1<<20, 41)
	h := &imageHTTP{img: img, etag: `"v1"`, cut: 300 << 10}
	var restarted atomic.Bool
	first, addr := serveHTTP(t, "127.0.0.1:0", h)
	h.onCut = func() {
		go func() {
			first.Close()
			time.Sleep(300 * time.Millisecond)
			serveHTTP(t, addr, h)
			restarted.Store(true)
		}()
	}
	srv := startServer(t, "")
	d := newDevice(t, srv, srv.URI(), nil, retrying())
	if r, err := d.do(codes.PUT, "/5/0/1", 0, []byte("http://"+addr+"/fw.bin")); err != nil || r.Code != codes.Changed {
		t.Fatalf("write URI: %v %v", r.Code, err)
	}
	d.waitState(30*time.Second, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	sum, n, _, opens, _ := d.h.snapshot()
	if sum != sha256.Sum256(img) || n != int64(len(img)) {
		t.Fatalf("stored %d bytes, hash equal %v", n, sum == sha256.Sum256(img))
	}
	h.mu.Lock()
	ranges := h.ranges
	h.mu.Unlock()
	if !restarted.Load() || opens != 1 || len(ranges) < 2 || ranges[len(ranges)-1] == "" {
		t.Fatalf("restarted %v, StreamOpen %d, requests' Range %q: want one open and a ranged resume", restarted.Load(), opens, ranges)
	}
	t.Logf("requests' Range headers: %q", ranges)
}

// The CoAP image server goes silent (100% loss) for less than the retry
// budget: the Block2 transfer resumes and ends byte-exact.
func TestImageServerDiesCoAP(t *testing.T) {
	img := image(1<<20, 42)
	is, im := imageServer(t, img)
	ipx := newProxy(t, is.LocalAddr().String(), lossy.Config{Seed: 42})
	var once sync.Once
	fw := retrying()
	fw.Download.Tx = download.TxParams{AckTimeout: ackTimeout, AckRandomFactor: 1.5, MaxRetransmit: 2}
	fw.Progress = func(written, _ int64) {
		if written >= 300<<10 {
			once.Do(func() {
				_ = ipx.SetConfig(lossy.Config{Loss: 1})
				time.AfterFunc(500*time.Millisecond, func() { _ = ipx.SetConfig(lossy.Config{}) })
			})
		}
	}
	srv := startServer(t, "")
	d := newDevice(t, srv, srv.URI(), nil, fw)
	uri := "coap://" + ipx.Addr().String() + "/fw/" + im.ID
	if r, err := d.do(codes.PUT, "/5/0/1", 0, []byte(uri)); err != nil || r.Code != codes.Changed {
		t.Fatalf("write URI: %v %v", r.Code, err)
	}
	d.waitState(30*time.Second, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	sum, n, _, opens, _ := d.h.snapshot()
	if sum != sha256.Sum256(img) || n != int64(len(img)) || opens != 1 {
		t.Fatalf("stored %d bytes, hash equal %v, StreamOpen %d (want 1: resumed)", n, sum == sha256.Sum256(img), opens)
	}
	logStats(t, "client<->image server (silent 500 ms)", ipx)
}

// The image changes (new ETag) between a break and the resume: the
// download starts again from byte 0 and ends with the new image, never a
// stitch of the two.
func TestImageETagChanges(t *testing.T) {
	a, b := image(1<<20, 43), image(1<<20, 44)
	h := &imageHTTP{img: a, etag: `"a"`, cut: 300 << 10}
	h.onCut = func() {
		h.mu.Lock() // onCut runs outside h.mu
		h.img, h.etag = b, `"b"`
		h.mu.Unlock()
	}
	_, addr := serveHTTP(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	srv := startServer(t, "")
	d := newDevice(t, srv, srv.URI(), nil, retrying())
	if r, err := d.do(codes.PUT, "/5/0/1", 0, []byte("http://"+addr+"/fw.bin")); err != nil || r.Code != codes.Changed {
		t.Fatalf("write URI: %v %v", r.Code, err)
	}
	d.waitState(30*time.Second, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	sum, n, _, opens, resets := d.h.snapshot()
	if sum != sha256.Sum256(b) || n != int64(len(b)) {
		t.Fatalf("stored %d bytes; equal to new image %v, to old %v", n, sum == sha256.Sum256(b), sum == sha256.Sum256(a))
	}
	if opens != 2 || resets < 1 {
		t.Errorf("StreamOpen %d, Reset %d: want a clean restart (2 opens, a reset)", opens, resets)
	}
	h.mu.Lock()
	t.Logf("requests' Range headers: %q", h.ranges)
	h.mu.Unlock()
}

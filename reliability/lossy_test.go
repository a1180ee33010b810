package reliability_test

import (
	"context"
	"crypto/sha256"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lossy"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// badLink is the link of docs/RELIABILITY.md: 10% loss, 5% duplication, 5% reordering,
// each way.
func badLink(seed int64) lossy.Config {
	return lossy.Config{Loss: 0.10, Duplicate: 0.05, Reorder: 0.05, Seed: seed}
}

func newProxy(t *testing.T, upstream string, cfg lossy.Config) *lossy.Proxy {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		t.Fatal(err)
	}
	p, err := lossy.New(context.Background(), ua, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// imageServer publishes img through the real server package, over CoAP
// and HTTP, and returns the image's id.
func imageServer(t *testing.T, img []byte) (*server.Server, server.Image) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(file, img, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &server.Server{Addr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: lwm2mtest.Logger(t)}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	im, err := s.Publish(file)
	if err != nil {
		t.Fatal(err)
	}
	return s, im
}

func logStats(t *testing.T, name string, p *lossy.Proxy) {
	st := p.Stats()
	t.Logf("%s: up recv %d fwd %d drop %d dup %d reord %d; down recv %d fwd %d drop %d dup %d reord %d", name,
		st.Up.Received, st.Up.Forwarded, st.Up.Dropped, st.Up.Duplicated, st.Up.Reordered,
		st.Down.Received, st.Down.Forwarded, st.Down.Dropped, st.Down.Duplicated, st.Down.Reordered)
	if st.Up.Dropped+st.Down.Dropped == 0 && st.Up.Received+st.Down.Received > 200 {
		t.Errorf("%s: the proxy dropped nothing: the link was not lossy", name)
	}
}

// A 1 MiB push over the bad link ends Downloaded with the source's hash.
func TestLossyPush(t *testing.T) {
	t.Parallel() // waits on timers and processes more than on the CPU
	img := image(1<<20, 1)
	srv := startServer(t, "")
	px := newProxy(t, srv.Addr(), badLink(11))
	d := newDevice(t, srv, "coap://"+px.Addr().String(), nil, fwupdate.Config{})
	code, resent := d.push(img)
	if code != codes.Changed {
		t.Fatalf("push ended with %v", code)
	}
	d.waitState(30*time.Second, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	sum, n, finished, opens, _ := d.h.snapshot()
	if !finished || n != int64(len(img)) || sum != sha256.Sum256(img) {
		t.Fatalf("stored %d bytes (finished %v), hash equal %v", n, finished, sum == sha256.Sum256(img))
	}
	if opens != 1 {
		t.Errorf("StreamOpen called %d times, want 1", opens)
	}
	t.Logf("push: %d bytes, %d blocks re-sent by the server after a timeout", len(img), resent)
	logStats(t, "client<->server", px)
}

// A 1 MiB pull over CoAP with both the server link and the image link
// bad ends Downloaded with the source's hash.
func TestLossyPull(t *testing.T) {
	t.Parallel() // waits on timers and processes more than on the CPU
	img := image(1<<20, 2)
	is, im := imageServer(t, img)
	srv := startServer(t, "")
	px := newProxy(t, srv.Addr(), badLink(21))
	ipx := newProxy(t, is.LocalAddr().String(), badLink(22))
	d := newDevice(t, srv, "coap://"+px.Addr().String(), nil, fwupdate.Config{})
	uri := "coap://" + ipx.Addr().String() + "/fw/" + im.ID
	r, err := d.do(codes.PUT, "/5/0/1", 0, []byte(uri))
	if err != nil || r.Code != codes.Changed {
		t.Fatalf("write URI: %v %v", r.Code, err)
	}
	d.waitState(60*time.Second, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	sum, n, finished, opens, _ := d.h.snapshot()
	if !finished || n != int64(len(img)) || sum != sha256.Sum256(img) {
		t.Fatalf("stored %d bytes (finished %v), hash equal %v", n, finished, sum == sha256.Sum256(img))
	}
	t.Logf("pull: %d bytes, StreamOpen %d", len(img), opens)
	logStats(t, "client<->server", px)
	logStats(t, "client<->image server", ipx)
}

// With 100% loss for longer than the retry budget, a pull ends Idle with
// Connection lost (4), never stuck in Downloading.
func TestLossyBlackhole(t *testing.T) {
	img := image(1<<20, 3)
	is, im := imageServer(t, img)
	srv := startServer(t, "")
	ipx := newProxy(t, is.LocalAddr().String(), lossy.Config{Seed: 31})
	var once sync.Once
	fw := fwupdate.Config{
		// Budget: 3 attempts of MAX_TRANSMIT_WAIT = 40ms·(2³−1)·1.5 each.
		Download: download.Request{Retries: 2, RetryDelay: 50 * time.Millisecond, Timeout: 2 * time.Second,
			Tx: download.TxParams{AckTimeout: ackTimeout, AckRandomFactor: 1.5, MaxRetransmit: 2}},
		Progress: func(written, _ int64) {
			if written >= 256<<10 {
				once.Do(func() { _ = ipx.SetConfig(lossy.Config{Loss: 1}) })
			}
		},
	}
	d := newDevice(t, srv, srv.URI(), nil, fw)
	uri := "coap://" + ipx.Addr().String() + "/fw/" + im.ID
	if r, err := d.do(codes.PUT, "/5/0/1", 0, []byte(uri)); err != nil || r.Code != codes.Changed {
		t.Fatalf("write URI: %v %v", r.Code, err)
	}
	d.waitState(30*time.Second, fwupdate.StateIdle, fwupdate.ResultConnectionLost)
	_, _, finished, _, resets := d.h.snapshot()
	if finished || resets == 0 {
		t.Errorf("after the failure: finished %v, resets %d; want an unfinished image dropped by Reset", finished, resets)
	}
	logStats(t, "client<->image server (100% loss after 256 KiB)", ipx)
}

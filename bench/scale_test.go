package bench_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/lwm2m-fota/lwm2m/server"
)

// device is a fleet member: it keeps only the hash of what it receives
// and "applies" an upgrade by reporting success.
type device struct {
	mu   sync.Mutex
	h    interface{ Write([]byte) (int, error) }
	sum  func() []byte
	obj  *fwupdate.Object
	done [32]byte
}

func (d *device) StreamOpen(context.Context, string, []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := sha256.New()
	d.h, d.sum = h, func() []byte { return h.Sum(nil) }
	return nil
}
func (d *device) StreamWrite(b []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := d.h.Write(b)
	return err
}
func (d *device) StreamFinish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.done[:], d.sum())
	return nil
}
func (d *device) Reset() error { return nil }
func (d *device) PerformUpgrade(context.Context) error {
	go d.obj.SetResult(fwupdate.ResultSuccess) // applied at once, no reboot
	return nil
}

// TestScale runs a fleet of clients in one process against the server:
// idle, they cost little memory each; then all pull one image at once and
// every one ends with Update Result 1.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("a fleet of clients")
	}
	n := 1000
	if raceEnabled {
		n = 100
	}
	if v, err := strconv.Atoi(os.Getenv("LWM2M_SCALE_CLIENTS")); err == nil && v > 0 {
		n = v
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &server.Server{Addr: "127.0.0.1:0", Logger: quiet, RequestTimeout: 60 * time.Second}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	devs := make([]*device, n)
	var wg sync.WaitGroup
	for i := range n {
		c, err := lwm2m.New(lwm2m.Config{
			Endpoint: fmt.Sprintf("fleet-%04d", i),
			Server:   "coap://" + srv.LocalAddr().String(),
			Lifetime: time.Hour,
			Logger:   quiet,
			Tx:       lwm2m.TxParams{AckTimeout: 2 * time.Second, MaxRetransmit: 6},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.AddObject(objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme", FirmwareVersion: "1.0"}))
		d := &device{}
		if d.obj, err = fwupdate.Install(c, d, fwupdate.Config{Logger: quiet}); err != nil {
			t.Fatal(err)
		}
		devs[i] = d
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
	}
	deadline := time.Now().Add(2 * time.Minute)
	for len(srv.Registrations()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d clients registered", len(srv.Registrations()), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // let registration traffic settle
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// Heap and goroutine stacks of the clients and the server's records.
	per := (int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)) / int64(n)
	t.Logf("%d idle clients: %.1f KiB each (heap+stacks, server included), %d goroutines", n, float64(per)/1024, runtime.NumGoroutine())
	if !raceEnabled && per > 64<<10 {
		t.Errorf("%d bytes per idle client, want at most 64 KiB", per)
	}

	img := make([]byte, 64<<10)
	for i := range img {
		img[i] = byte(i * 31)
	}
	dir := t.TempDir()
	payload := filepath.Join(dir, "img")
	if err := os.WriteFile(payload, img, 0o600); err != nil {
		t.Fatal(err)
	}
	uctx, ucancel := context.WithTimeout(ctx, 5*time.Minute)
	defer ucancel()
	start := time.Now()
	results, err := srv.UpdateMany(uctx, "fleet-*", payload, server.PullCoAP, nil)
	if err != nil {
		t.Fatalf("update many: %v", err)
	}
	ok := 0
	want := sha256.Sum256(img)
	for i, r := range results {
		if r.Result == server.ResultSuccess {
			ok++
		} else if ok+i < 5 {
			t.Logf("%s: %v %v", r.Endpoint, r.Result, r.Err)
		}
	}
	for _, d := range devs {
		if d.done != want {
			t.Fatal("a device stored an image whose hash differs")
		}
	}
	t.Logf("%d clients pulled 64 KiB at once in %v: %d succeeded", n, time.Since(start).Round(time.Millisecond), ok)
	if ok != n {
		t.Fatalf("%d of %d updates succeeded", ok, n)
	}
	cancel()
	wg.Wait()
}

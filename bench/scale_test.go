package bench_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/objects"
)

// device is a fleet member: it keeps only the hash of what it receives
// and "applies" an upgrade by reporting success.
type device struct {
	mu   sync.Mutex
	h    interface{ Write([]byte) (int, error) }
	sum  func() []byte
	obj  *fwupdate.Object
	done [32]byte
	// finished, if set, hears of each package StreamFinish completes.
	finished func(sum [32]byte)
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
	if d.finished != nil {
		d.finished(d.done)
	}
	return nil
}
func (d *device) Reset() error { return nil }
func (d *device) PerformUpgrade(context.Context) error {
	go d.obj.SetResult(fwupdate.ResultSuccess) // applied at once, no reboot
	return nil
}

// TestScale runs a fleet of clients in this process against "lwm2m
// server" in its own process, so that what is measured is the clients'
// cost alone: idle, each costs little memory; then all pull one 64 KiB
// image at once and every one ends with Update Result 1.
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
	dir := t.TempDir()
	bin := filepath.Join(dir, "lwm2m")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lwm2m").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	coapAddr, api := startServer(t, bin, dir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	devs := make([]*device, n)
	var wg sync.WaitGroup
	for i := range n {
		c, err := lwm2m.New(lwm2m.Config{
			Endpoint: fmt.Sprintf("fleet-%04d", i),
			Server:   "coap://" + coapAddr,
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
		registered := func() bool { return c.Registered() }
		for !registered() && ctx.Err() == nil {
			time.Sleep(time.Millisecond) // register one at a time, as a fleet coming up would
		}
	}
	time.Sleep(time.Second) // let registration traffic settle
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if p := os.Getenv("LWM2M_SCALE_HEAPPROFILE"); p != "" {
		f, _ := os.Create(p)
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	// Heap in use and goroutine stacks: what the clients hold.
	per := (int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)) / int64(n)
	t.Logf("%d idle clients: %.1f KiB each (heap %.1f KiB, stacks %.1f KiB), %.1f goroutines each", n, float64(per)/1024,
		float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(n)/1024,
		float64(int64(after.StackInuse)-int64(before.StackInuse))/float64(n)/1024,
		float64(runtime.NumGoroutine()-goroutines)/float64(n))
	if !raceEnabled && per > 64<<10 {
		t.Errorf("%d bytes per idle client, want at most 64 KiB", per)
	}

	img := make([]byte, 64<<10)
	for i := range img {
		img[i] = byte(i * 31)
	}
	payload := filepath.Join(dir, "img")
	if err := os.WriteFile(payload, img, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := exec.Command(bin, "server", "update", "-api", api, "-match", "fleet-*", "-package", payload, "-method", "pull", "-timeout", "5m").CombinedOutput()
	took := time.Since(start)
	want := sha256.Sum256(img)
	ok := 0
	for _, d := range devs {
		if st, res := d.obj.State(); st == fwupdate.StateIdle && res == fwupdate.ResultSuccess {
			ok++
			if d.done != want {
				t.Fatal("a device reports Success for an image whose hash differs")
			}
		}
	}
	t.Logf("%d clients pulled 64 KiB at once in %v: %d succeeded", n, took.Round(time.Millisecond), ok)
	if err != nil || ok != n {
		t.Fatalf("%d of %d updates succeeded (update command: %v)\n%s", ok, n, err, tail(out, 2000))
	}
	cancel()
	wg.Wait()
}

// startServer runs "lwm2m server" and returns its CoAP address and API URL.
func startServer(t *testing.T, bin, dir string) (coapAddr, api string) {
	stdout := startChild(t, exec.Command(bin, "server", "-coap", "127.0.0.1:0", "-api", "127.0.0.1:0", "-db", filepath.Join(dir, "reg.db")))
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if m := regexp.MustCompile(`listening coap=(\S+) api=(\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, stdout)
			return m[1], m[2]
		}
	}
	t.Fatal("lwm2m server did not say where it listens")
	return "", ""
}

// startChild starts cmd, stops it when the test ends, and returns its
// standard output.
func startChild(tb testing.TB, cmd *exec.Cmd) io.Reader {
	tb.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return stdout
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

package bench_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// pushDeviceEnv names the server a re-executed test binary registers with
// when it plays the device of BenchmarkPush.
const pushDeviceEnv = "LWM2M_BENCH_PUSH_DEVICE"

// BenchmarkPush pushes 16 MiB with Block1 from our server into our
// client (/5/0/0), and in the same run PUTs the same file with
// coap-client-notls into coap-server-notls, the anchor of docs/PERFORMANCE.md.
// Reported: our MB/s and the ratio to libcoap (above 1: we are faster).
//
// "processes=2" runs the device in a process of its own, as the anchor's
// client and server are and as a device and its server always are.
// "processes=1" keeps both ends in this process: one Go runtime then
// bounces every block between its threads, which costs cross-thread
// wake-ups that neither end pays on its own.
func BenchmarkPush(b *testing.B) {
	const size = 16 << 20
	dir := b.TempDir()
	img := filepath.Join(dir, "img")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	if err := os.WriteFile(img, data, 0o600); err != nil {
		b.Fatal(err)
	}
	want := sha256.Sum256(data)
	clientBin := libcoaptest.NeedBinary(b, "coap-client-notls")
	port := libcoaptest.StartServer(b, libcoaptest.NeedBinary(b, "coap-server-notls"))

	for _, procs := range []int{2, 1} {
		b.Run(fmt.Sprintf("processes=%d", procs), func(b *testing.B) {
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			srv := &server.Server{Addr: "127.0.0.1:0", Logger: quiet}
			if err := srv.Listen(); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go srv.Serve(ctx)
			defer srv.Close()
			addr := "coap://" + srv.LocalAddr().String()

			// done yields the hash of each package the device finished.
			var done func() [32]byte
			if procs == 2 {
				done = startPushDevice(b, addr)
			} else {
				d := startDevice(ctx, b, addr, quiet)
				done = func() [32]byte { return d.done }
			}
			for _, ok := srv.Registration("push-bench"); !ok; _, ok = srv.Registration("push-bench") {
				time.Sleep(10 * time.Millisecond)
			}

			var ours, anchor time.Duration
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if err := srv.Push(ctx, "push-bench", img, nil); err != nil {
					b.Fatal(err)
				}
				ours += time.Since(t0)
				if done() != want {
					b.Fatal("pushed image hash differs")
				}
				// An empty Package URI takes /5 back to Idle for the next round.
				if err := srv.Write(ctx, "push-bench", mustPath("/5/0/1"), 0, []byte{}, true); err != nil {
					b.Fatal(err)
				}

				t0 = time.Now()
				out, err := exec.Command(clientBin, "-m", "put", "-b", "1024", "-f", img, fmt.Sprintf("coap://127.0.0.1:%d/fw", port)).CombinedOutput()
				anchor += time.Since(t0)
				if err != nil {
					b.Fatalf("coap-client: %v\n%s", err, out)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(size)*float64(b.N)/ours.Seconds()/1e6, "MB/s")
			b.ReportMetric(float64(size)*float64(b.N)/anchor.Seconds()/1e6, "libcoap-MB/s")
			b.ReportMetric(anchor.Seconds()/ours.Seconds(), "x-libcoap")
		})
	}
}

// startDevice runs a client with an in-memory /5 in this process.
func startDevice(ctx context.Context, tb testing.TB, addr string, log *slog.Logger) *device {
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "push-bench", Server: addr, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	d := &device{}
	if d.obj, err = fwupdate.Install(c, d, fwupdate.Config{Logger: log}); err != nil {
		tb.Fatal(err)
	}
	go c.Run(ctx)
	return d
}

// startPushDevice re-executes this test binary as the device (see
// TestPushDevice) and returns a function that waits for the hash of the
// next package it finishes.
func startPushDevice(b *testing.B, addr string) func() [32]byte {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestPushDevice$")
	cmd.Env = append(os.Environ(), pushDeviceEnv+"="+addr)
	cmd.Stderr = os.Stderr
	lines := bufio.NewScanner(startChild(b, cmd))
	return func() (sum [32]byte) {
		for lines.Scan() {
			if h, ok := strings.CutPrefix(lines.Text(), "finished "); ok {
				hex.Decode(sum[:], []byte(h))
				return sum
			}
		}
		b.Fatalf("device process ended: %v", lines.Err())
		return sum
	}
}

// TestPushDevice is the device process of BenchmarkPush; run directly it
// does nothing. It prints "finished HASH" for each package it receives.
func TestPushDevice(t *testing.T) {
	addr := os.Getenv(pushDeviceEnv)
	if addr == "" {
		t.Skip("runs only as BenchmarkPush's device process")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := startDevice(ctx, t, addr, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.finished = func(sum [32]byte) { fmt.Printf("finished %x\n", sum) }
	<-ctx.Done()
}

func mustPath(s string) model.Path {
	p, err := model.ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}

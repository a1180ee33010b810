package bench_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// BenchmarkPush pushes 16 MiB with Block1 from our server into our
// client (/5/0/0), and in the same run PUTs the same file with
// coap-client-notls into coap-server-notls, the anchor of issue 7.
// Reported: our MB/s and the ratio to libcoap (above 1: we are faster).
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
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &server.Server{Addr: "127.0.0.1:0", Logger: quiet}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "push-bench", Server: "coap://" + srv.LocalAddr().String(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	d := &device{}
	if d.obj, err = fwupdate.Install(c, d, fwupdate.Config{Logger: quiet}); err != nil {
		b.Fatal(err)
	}
	go c.Run(ctx)
	for !c.Registered() {
		time.Sleep(10 * time.Millisecond)
	}

	var anchor time.Duration
	clientBin := libcoaptest.NeedBinary(b, "coap-client-notls")
	port := libcoaptest.StartServer(b, libcoaptest.NeedBinary(b, "coap-server-notls"))
	var ours time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := srv.Push(ctx, "push-bench", img, nil); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		if d.done != sha256.Sum256(data) {
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
}

func mustPath(s string) model.Path {
	p, err := model.ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}

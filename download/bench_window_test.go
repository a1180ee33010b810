package download

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lossy"
)

// BenchmarkCoAPWindowDelay pulls 64 KiB through a proxy that adds 20 ms
// each way (a 40 ms round trip), with several window sizes. Compare the
// ns/op of window=1 and window=8 for the speed-up of the window.
func BenchmarkCoAPWindowDelay(b *testing.B) {
	data := randomBytes(b, 64<<10)
	s := newCoAPServer(b, data, "e")
	for _, window := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			p, err := lossy.New(context.Background(), s.pc.LocalAddr().(*net.UDPAddr), lossy.Config{Delay: 20 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			uri := "coap://" + p.Addr().String() + "/fw"
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var sink discardSink
				if _, err := Get(context.Background(), Request{URI: uri, Window: window}, &sink); err != nil {
					b.Fatal(err)
				}
				if sink.n != int64(len(data)) {
					b.Fatalf("got %d bytes", sink.n)
				}
			}
		})
	}
}

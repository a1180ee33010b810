package download

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkCoAPPullLibcoap pulls a 1 MiB image from coap-server-notls per
// op, stop-and-wait, for profiling the client against a real server:
//
//	go test -run '^$' -bench CoAPPullLibcoap -cpuprofile cpu.out ./download
func BenchmarkCoAPPullLibcoap(b *testing.B) {
	server := needBinary(b, "coap-server-notls")
	port := startLibcoap(b, server)
	data := randomBytes(b, 1<<20)
	putFile(b, port, data)
	uri := fmt.Sprintf("coap://127.0.0.1:%d/fw", port)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		var sink discardSink
		if _, err := Get(context.Background(), Request{URI: uri}, &sink); err != nil {
			b.Fatal(err)
		}
		if sink.n != int64(len(data)) {
			b.Fatalf("got %d bytes", sink.n)
		}
	}
}

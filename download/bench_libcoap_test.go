package download

import (
	"context"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"
	"testing"
)

// BenchmarkCoAPPullLibcoap pulls a 1 MiB image from coap-server-notls per
// op, stop-and-wait, for profiling the client against a real server:
//
//	go test -run '^$' -bench CoAPPullLibcoap -cpuprofile cpu.out ./download
func BenchmarkCoAPPullLibcoap(b *testing.B) {
	server := libcoaptest.NeedBinary(b, "coap-server-notls")
	port := libcoaptest.StartServer(b, server)
	data := randomBytes(b, 1<<20)
	libcoaptest.PutFile(b, port, "fw", data)
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

// BenchmarkCoAPSPullLibcoap pulls 1 MiB per op over DTLS with a PSK from
// coap-server-openssl, stop-and-wait.
func BenchmarkCoAPSPullLibcoap(b *testing.B) {
	server := libcoaptest.NeedBinary(b, "coap-server-openssl")
	port := libcoaptest.StartServer(b, server, "-k", "secretPSK", "-h", "CoAP")
	data := randomBytes(b, 1<<20)
	libcoaptest.PutFile(b, port, "fw", data)
	uri := fmt.Sprintf("coaps://127.0.0.1:%d/fw", port+1)
	sec := &Security{PSKIdentity: "bench", PSK: []byte("secretPSK")}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var sink discardSink
		if _, err := Get(context.Background(), Request{URI: uri, Security: sec}, &sink); err != nil {
			b.Fatal(err)
		}
		if sink.n != int64(len(data)) {
			b.Fatalf("got %d bytes", sink.n)
		}
	}
}

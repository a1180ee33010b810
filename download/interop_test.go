package download

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"
)

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestInteropLibcoapUDP(t *testing.T) {
	server := libcoaptest.NeedBinary(t, "coap-server-notls")
	port := libcoaptest.StartServer(t, server)
	uri := fmt.Sprintf("coap://127.0.0.1:%d/fw", port)
	for _, tc := range []struct {
		size, block int
	}{{1, 1024}, {1023, 1024}, {1024, 1024}, {1025, 1024}, {1 << 20, 1024}, {100_000, 512}, {5000, 16}} {
		t.Run(fmt.Sprintf("size%d_block%d", tc.size, tc.block), func(t *testing.T) {
			data := randomBytes(t, tc.size)
			libcoaptest.PutFile(t, port, "fw", data)
			var sink memSink
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := Get(ctx, Request{URI: uri, BlockSize: tc.block}, &sink)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := sha256.Sum256(sink.bytes()), sha256.Sum256(data); got != want {
				t.Fatalf("hash mismatch: got %d bytes, want %d", len(sink.bytes()), len(data))
			}
			if res.Bytes != int64(tc.size) {
				t.Errorf("Result.Bytes = %d, want %d", res.Bytes, tc.size)
			}
		})
	}
}

func TestInteropLibcoapTCP(t *testing.T) {
	server := libcoaptest.NeedBinary(t, "coap-server-notls")
	port := libcoaptest.StartServer(t, server)
	data := randomBytes(t, 300_000)
	libcoaptest.PutFile(t, port, "fw", data)
	var sink memSink
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, err := Get(ctx, Request{URI: fmt.Sprintf("coap+tcp://127.0.0.1:%d/fw", port), Logger: logger}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatalf("got %d bytes, want %d identical", len(sink.bytes()), len(data))
	}
	t.Logf("%s", logs.String())
}

func TestInteropLibcoapDTLSPSK(t *testing.T) {
	for _, bin := range []string{"coap-server-openssl", "coap-server-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			server := libcoaptest.NeedBinary(t, bin)
			port := libcoaptest.StartServer(t, server, "-k", "secretPSK", "-h", "CoAP")
			data := randomBytes(t, 70_000)
			libcoaptest.PutFile(t, port, "fw", data)
			uri := fmt.Sprintf("coaps://127.0.0.1:%d/fw", port+1)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			var sink memSink
			sec := &Security{PSKIdentity: "device", PSK: []byte("secretPSK")}
			if _, err := Get(ctx, Request{URI: uri, Security: sec}, &sink); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sink.bytes(), data) {
				t.Fatalf("got %d bytes, want %d identical", len(sink.bytes()), len(data))
			}

			start := time.Now()
			bad := &Security{PSKIdentity: "device", PSK: []byte("wrongPSK")}
			_, err := Get(ctx, Request{URI: uri, Security: bad, Timeout: 5 * time.Second}, &memSink{})
			if !errors.Is(err, ErrConnection) {
				t.Fatalf("wrong PSK: err = %v, want ErrConnection", err)
			}
			t.Logf("wrong PSK failed after %v: %v", time.Since(start), err)
		})
	}
}

func TestInteropLibcoapWindow(t *testing.T) {
	server := libcoaptest.NeedBinary(t, "coap-server-notls")
	port := libcoaptest.StartServer(t, server)
	data := randomBytes(t, 1<<20+7)
	libcoaptest.PutFile(t, port, "fw", data)
	for _, window := range []int{2, 8, 32} {
		var sink memSink
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		_, err := Get(ctx, Request{URI: fmt.Sprintf("coap://127.0.0.1:%d/fw", port), Window: window}, &sink)
		cancel()
		if err != nil {
			t.Fatalf("window %d: %v", window, err)
		}
		if got, want := sha256.Sum256(sink.bytes()), sha256.Sum256(data); got != want {
			t.Fatalf("window %d: hash mismatch", window)
		}
	}
}

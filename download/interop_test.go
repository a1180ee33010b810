package download

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// needBinary skips (locally) or fails (in CI) when a libcoap tool is missing.
func needBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not installed", name)
		}
		t.Fatalf("%s not installed: %v", name, err)
	}
	return p
}

// freePort returns a port free for both UDP and TCP on 127.0.0.1 (and the
// next one, which libcoap uses for DTLS and TLS).
func freePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		u.Close()
		ok := true
		for _, p := range []int{port, port + 1} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
			u2, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			u2.Close()
		}
		if ok && port < 65535 {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// startLibcoap runs a libcoap server on 127.0.0.1 and returns its port.
// A port found free may be taken by someone else before the server binds
// it, so a server that does not come up is tried again on another port.
func startLibcoap(t testing.TB, bin string, args ...string) int {
	t.Helper()
	var out bytes.Buffer
	for range 3 {
		if port, ok := tryLibcoap(t, bin, &out, args...); ok {
			return port
		}
	}
	t.Fatalf("%s did not start:\n%s", bin, out.String())
	return 0
}

func tryLibcoap(t testing.TB, bin string, out *bytes.Buffer, args ...string) (int, bool) {
	port := freePort(t)
	args = append([]string{"-A", "127.0.0.1", "-p", strconv.Itoa(port), "-d", "10"}, args...)
	cmd := exec.Command(bin, args...)
	out.Reset()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() { cmd.Process.Kill(); <-exited }
	// Wait until it listens on UDP, unless it exits first.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return 0, false
		default:
		}
		c, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("%s output:\n%s", bin, out.String())
				}
			})
			return port, true
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return 0, false
}

// putFile stores data at coap://127.0.0.1:port/fw with coap-client-notls.
func putFile(t testing.TB, port int, data []byte) {
	t.Helper()
	client := needBinary(t, "coap-client-notls")
	f := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(client, "-m", "put", "-f", f, "-b", "1024", fmt.Sprintf("coap://127.0.0.1:%d/fw", port)).CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client put: %v\n%s", err, out)
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestInteropLibcoapUDP(t *testing.T) {
	server := needBinary(t, "coap-server-notls")
	port := startLibcoap(t, server)
	uri := fmt.Sprintf("coap://127.0.0.1:%d/fw", port)
	for _, tc := range []struct {
		size, block int
	}{{1, 1024}, {1023, 1024}, {1024, 1024}, {1025, 1024}, {1 << 20, 1024}, {100_000, 512}, {5000, 16}} {
		t.Run(fmt.Sprintf("size%d_block%d", tc.size, tc.block), func(t *testing.T) {
			data := randomBytes(t, tc.size)
			putFile(t, port, data)
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
	server := needBinary(t, "coap-server-notls")
	port := startLibcoap(t, server)
	data := randomBytes(t, 300_000)
	putFile(t, port, data)
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
			server := needBinary(t, bin)
			port := startLibcoap(t, server, "-k", "secretPSK", "-h", "CoAP")
			data := randomBytes(t, 70_000)
			putFile(t, port, data)
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
	server := needBinary(t, "coap-server-notls")
	port := startLibcoap(t, server)
	data := randomBytes(t, 1<<20+7)
	putFile(t, port, data)
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

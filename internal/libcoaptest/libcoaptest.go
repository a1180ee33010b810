// Package libcoaptest runs libcoap's coap-server and coap-client (Debian
// package libcoap3-bin) for interop tests: the real, independent peer.
package libcoaptest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NeedBinary returns the path of a libcoap tool. Without it the test is
// skipped locally and fails in CI (CI is set), which installs libcoap3-bin.
func NeedBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not installed (apt-get install libcoap3-bin)", name)
		}
		t.Fatalf("%s not installed: %v", name, err)
	}
	return p
}

// FreePort returns a port free for both UDP and TCP on 127.0.0.1, and the
// next one too, which libcoap uses for DTLS and TLS.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		u.Close()
		ok := port < 65535
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
		if ok {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// StartServer runs a libcoap server binary (coap-server-notls, -openssl,
// -gnutls) on 127.0.0.1 with dynamic resources (-d 10) and returns its
// port; DTLS and TLS listen on port+1. It stops when the test ends. A port
// found free may be taken before the server binds it, so a server that
// does not come up is tried again on another port.
func StartServer(t testing.TB, bin string, args ...string) int {
	t.Helper()
	var out bytes.Buffer
	for range 3 {
		if port, ok := tryServer(t, bin, &out, args...); ok {
			return port
		}
	}
	t.Fatalf("%s did not start:\n%s", bin, out.String())
	return 0
}

func tryServer(t testing.TB, bin string, out *bytes.Buffer, args ...string) (int, bool) {
	port := FreePort(t)
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
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return 0, false
		default:
		}
		c, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil { // taken: the server listens
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

// PutFile stores data at coap://127.0.0.1:port/path with coap-client-notls,
// which is how a libcoap server comes to serve a file.
func PutFile(t testing.TB, port int, path string, data []byte) {
	t.Helper()
	client := NeedBinary(t, "coap-client-notls")
	f := filepath.Join(t.TempDir(), "put.bin")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(client, "-m", "put", "-f", f, "-b", "1024", fmt.Sprintf("coap://127.0.0.1:%d/%s", port, path)).CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client put: %v\n%s", err, out)
	}
}

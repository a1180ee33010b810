package fwupdate_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// bufHandlers keeps the package in memory and can resume it, like a
// device whose storage survives a reboot.
type bufHandlers struct {
	mu      sync.Mutex
	data    []byte
	written atomic.Int64 // bytes taken by StreamWrite in this run
	resumes []int64
	opens   int
	resets  int
	sec     *download.Security
}

func (b *bufHandlers) StreamOpen(context.Context, string, []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = b.data[:0]
	b.opens++
	return nil
}
func (b *bufHandlers) StreamResume(_ context.Context, _ string, _ []byte, off int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if int64(len(b.data)) < off {
		return fmt.Errorf("only %d bytes held", len(b.data))
	}
	b.data = b.data[:off]
	b.resumes = append(b.resumes, off)
	return nil
}
func (b *bufHandlers) StreamWrite(p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = append(b.data, p...)
	b.written.Add(int64(len(p)))
	return nil
}
func (b *bufHandlers) StreamFinish() error { return nil }
func (b *bufHandlers) Reset() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = nil
	b.resets++
	return nil
}
func (b *bufHandlers) PerformUpgrade(context.Context) error { return nil }
func (b *bufHandlers) SecurityConfig(string) (*download.Security, error) {
	return b.sec, nil
}
func (b *bufHandlers) sum() [32]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return sha256.Sum256(b.data)
}

// device is one boot of a client with the /5 object over given handlers and store.
func boot(t *testing.T, srv *lwm2mtest.Server, h fwupdate.Handlers, store fwupdate.Store, ep string) (*fwupdate.Object, *lwm2mtest.Running) {
	t.Helper()
	c, err := lwm2m.New(lwm2m.Config{Endpoint: ep, Server: srv.URI(), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := fwupdate.Install(c, h, fwupdate.Config{Store: store, Download: downloadFast, Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return obj, lwm2mtest.RunClient(t, srv, c, ep)
}

func waitObj(t *testing.T, obj *fwupdate.Object, st fwupdate.State, res fwupdate.Result) {
	t.Helper()
	waitfor.Until(t, 30*time.Second, func() error {
		if s, r := obj.State(); s != st || r != res {
			return fmt.Errorf("state %v/%v, want %v/%v", s, r, st, res)
		}
		return nil
	})
}

func writeURI(t *testing.T, run *lwm2mtest.Running, uri string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := lwm2mtest.Do(ctx, run.Conn(), codes.PUT, "/5/0/1", 0, []byte(uri))
	if err != nil || r.Code != codes.Changed {
		t.Fatalf("write Package URI: %v %v", r.Code, err)
	}
}

// throttled serves img over HTTP slowly, recording each Range header.
func throttled(t *testing.T, img []byte, etag string) (string, func() []string) {
	var mu sync.Mutex
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		w.Header().Set("ETag", etag)
		http.ServeContent(w, r, "fw", time.Time{}, &slowReader{r: bytes.NewReader(img)})
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/fw", func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), ranges...) }
}

type slowReader struct{ r *bytes.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	return s.r.Read(p[:min(len(p), 4096)])
}
func (s *slowReader) Seek(off int64, whence int) (int64, error) { return s.r.Seek(off, whence) }

// A reboot mid-download resumes from the persisted offset with the ETag:
// the server sees a Range request, and the image ends byte-exact.
func TestResumeAfterRebootHTTP(t *testing.T) {
	img := image(1<<20, 7)
	uri, ranges := throttled(t, img, `"strong-1"`)
	srv := lwm2mtest.Start(t, "")
	store := fwupdate.FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
	h := &bufHandlers{}

	obj, run := boot(t, srv, h, store, "resume-http")
	writeURI(t, run, uri)
	for h.written.Load() < 300_000 {
		time.Sleep(5 * time.Millisecond)
	}
	obj.Close() // the process dies: what is persisted is what counts
	run.Stop()
	p, err := store.Load()
	if err != nil || p.State != fwupdate.StateDownloading || p.Offset == 0 {
		t.Fatalf("persisted %+v (%v), want Downloading with an offset", p, err)
	}

	h.written.Store(0)
	obj2, _ := boot(t, srv, h, store, "resume-http")
	waitObj(t, obj2, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	if h.sum() != sha256.Sum256(img) {
		t.Fatal("resumed image differs from the source")
	}
	got := ranges()
	if len(h.resumes) != 1 || !strings.HasPrefix(got[len(got)-1], fmt.Sprintf("bytes=%d-", h.resumes[0])) {
		t.Fatalf("resumes %v, Range headers %q: want one resume at the persisted offset", h.resumes, got)
	}
	if h.written.Load() != int64(len(img))-h.resumes[0] {
		t.Errorf("second boot fetched %d bytes, want %d", h.written.Load(), int64(len(img))-h.resumes[0])
	}
}

// An image that changes (new ETag) between boots is fetched again from 0.
func TestResumeWithChangedETagRestarts(t *testing.T) {
	img1, img2 := image(600_000, 8), image(600_000, 9)
	var cur atomic.Pointer[[]byte]
	cur.Store(&img1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := *cur.Load()
		w.Header().Set("ETag", fmt.Sprintf(`"%x"`, sha256.Sum256(b)))
		http.ServeContent(w, r, "fw", time.Time{}, &slowReader{r: bytes.NewReader(b)})
	}))
	defer srv.Close()
	lw := lwm2mtest.Start(t, "")
	store := &fwupdate.MemoryStore{}
	h := &bufHandlers{}
	obj, run := boot(t, lw, h, store, "etag")
	writeURI(t, run, srv.URL+"/fw")
	for h.written.Load() < 100_000 {
		time.Sleep(5 * time.Millisecond)
	}
	obj.Close()
	run.Stop()
	cur.Store(&img2)
	obj2, _ := boot(t, lw, h, store, "etag")
	waitObj(t, obj2, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	if h.sum() != sha256.Sum256(img2) {
		t.Fatal("image after an ETag change is not the new image")
	}
}

// Downloaded survives a restart, and so does an upgrade in flight, which
// the application then settles with SetResult.
func TestStateSurvivesRestart(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	store := fwupdate.FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
	h := newMem()
	h.upgrade = func() error { select {} }
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "persist", Server: srv.URI(), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := fwupdate.Install(c, h, fwupdate.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, srv: srv, run: lwm2mtest.RunClient(t, srv, c, "persist"), obj: obj, h: h}
	if code := f.push(image(5000, 10)); code != codes.Changed {
		t.Fatalf("push: %v", code)
	}
	f.waitState(fwupdate.StateDownloaded, 0)
	f.run.Stop()

	obj2, run2 := boot(t, srv, newMem(), store, "persist")
	f2 := &fixture{t: t, srv: srv, run: run2, obj: obj2}
	f2.waitState(fwupdate.StateDownloaded, 0)
	if f2.read("/5/0/6") != "fw" || f2.read("/5/0/7") != "2.0" {
		t.Errorf("PkgName/PkgVersion after restart = %q/%q", f2.read("/5/0/6"), f2.read("/5/0/7"))
	}
	if c := f2.do(codes.POST, "/5/0/2", -1, nil); c != codes.Changed {
		t.Fatalf("update: %v", c)
	}
	f2.waitState(fwupdate.StateUpdating, 0)
	run2.Stop()

	obj3, run3 := boot(t, srv, newMem(), store, "persist")
	f3 := &fixture{t: t, srv: srv, run: run3, obj: obj3}
	f3.waitState(fwupdate.StateUpdating, 0)
	if err := obj3.SetResult(fwupdate.ResultSuccess); err != nil {
		t.Fatal(err)
	}
	f3.waitState(fwupdate.StateIdle, fwupdate.ResultSuccess)
}

// Pull from libcoap's servers, the independent peer: CoAP Block2, CoAP
// over TCP and CoAPS with a PSK from the SecurityConfig handler.
func TestPullFromLibcoap(t *testing.T) {
	cases := []struct {
		name, bin, scheme string
		portOff           int
		args              []string
		sec               *download.Security
	}{
		{"coap", "coap-server-notls", "coap", 0, nil, nil},
		{"coap+tcp", "coap-server-notls", "coap+tcp", 0, nil, nil},
		{"coaps psk", "coap-server-openssl", "coaps", 1, []string{"-k", "fw-secret", "-h", "dev"}, &download.Security{PSKIdentity: "dev", PSK: []byte("fw-secret")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin := libcoaptest.NeedBinary(t, tc.bin)
			port := libcoaptest.StartServer(t, bin, tc.args...)
			img := image(300_000, 11)
			libcoaptest.PutFile(t, port, "fw", img)
			srv := lwm2mtest.Start(t, "")
			h := &bufHandlers{sec: tc.sec}
			obj, run := boot(t, srv, h, &fwupdate.MemoryStore{}, "libcoap-"+strings.ReplaceAll(tc.name, " ", "-"))
			writeURI(t, run, fmt.Sprintf("%s://127.0.0.1:%d/fw", tc.scheme, port+tc.portOff))
			waitObj(t, obj, fwupdate.StateDownloaded, fwupdate.ResultInitial)
			if h.sum() != sha256.Sum256(img) {
				t.Fatal("image hash differs from the source")
			}
		})
	}
}

// A 64 MiB push goes through with flat memory: nothing holds the image.
func TestPushLargeImageFlatMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB over loopback")
	}
	const size = 64 << 20
	h := newMem()
	f := setup(t, h, fwupdate.Config{})
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	block := image(1024, 12)
	want := sha256.New()
	var code codes.Code
	for num := int64(0); num < size/1024; num++ {
		more := num < size/1024-1
		code = f.do(codes.PUT, "/5/0/0", 42, block, block1(num, more))
		want.Write(block)
		if code != codes.Continue {
			break
		}
	}
	close(stop)
	<-done
	if code != codes.Changed {
		t.Fatalf("push ended with %v", code)
	}
	f.waitState(fwupdate.StateDownloaded, 0)
	sum, n, _, _, _ := h.snapshot()
	if n != size || !bytes.Equal(sum[:], want.Sum(nil)) {
		t.Fatalf("stored %d bytes, hash equal %v", n, bytes.Equal(sum[:], want.Sum(nil)))
	}
	if p := peak.Load(); p > 32<<20 {
		t.Errorf("peak heap in use %d MiB while pushing 64 MiB", p>>20)
	}
	t.Logf("peak heap in use: %.1f MiB for a 64 MiB image", float64(peak.Load())/(1<<20))
}

// Suspend pauses a pull without leaving Downloading; Reconnect resumes it
// where it stopped.
func TestSuspendReconnect(t *testing.T) {
	img := image(1<<20, 13)
	uri, ranges := throttled(t, img, `"s1"`)
	srv := lwm2mtest.Start(t, "")
	h := &bufHandlers{}
	obj, run := boot(t, srv, h, &fwupdate.MemoryStore{}, "suspend")
	writeURI(t, run, uri)
	for h.written.Load() < 200_000 {
		time.Sleep(5 * time.Millisecond)
	}
	obj.Suspend()
	held := h.written.Load()
	if st, _ := obj.State(); st != fwupdate.StateDownloading {
		t.Fatalf("state %v after Suspend, want Downloading", st)
	}
	obj.Reconnect()
	waitObj(t, obj, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	if h.sum() != sha256.Sum256(img) {
		t.Fatal("image after Suspend and Reconnect differs from the source")
	}
	got := ranges()
	if len(got) != 2 || got[1] != fmt.Sprintf("bytes=%d-", held) {
		t.Fatalf("Range headers %q, want a second request from byte %d", got, held)
	}
}

// HTTPS with the server's certificate trusted through SecurityConfig; the
// same server untrusted ends with Connection lost.
func TestPullHTTPS(t *testing.T) {
	img := image(200_000, 14)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(img))
	}))
	defer ts.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	for _, tc := range []struct {
		name   string
		sec    *download.Security
		state  fwupdate.State
		result fwupdate.Result
	}{
		{"trusted", &download.Security{RootCAs: pool}, fwupdate.StateDownloaded, fwupdate.ResultInitial},
		{"untrusted", nil, fwupdate.StateIdle, fwupdate.ResultConnectionLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := lwm2mtest.Start(t, "")
			h := &bufHandlers{sec: tc.sec}
			obj, run := boot(t, srv, h, &fwupdate.MemoryStore{}, "https-"+tc.name)
			writeURI(t, run, ts.URL+"/fw")
			waitObj(t, obj, tc.state, tc.result)
			if tc.state == fwupdate.StateDownloaded && h.sum() != sha256.Sum256(img) {
				t.Fatal("image hash differs")
			}
		})
	}
}

// A wrong PSK fails the DTLS handshake with libcoap's server: Result 4.
func TestPullWrongPSK(t *testing.T) {
	bin := libcoaptest.NeedBinary(t, "coap-server-openssl")
	port := libcoaptest.StartServer(t, bin, "-k", "right-key", "-h", "dev")
	libcoaptest.PutFile(t, port, "fw", image(1000, 15))
	srv := lwm2mtest.Start(t, "")
	h := &bufHandlers{sec: &download.Security{PSKIdentity: "dev", PSK: []byte("wrong-key")}}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "wrongpsk", Server: srv.URI(), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	req := downloadFast
	req.Timeout = 2 * time.Second
	req.Retries = 0
	obj, err := fwupdate.Install(c, h, fwupdate.Config{Download: req})
	if err != nil {
		t.Fatal(err)
	}
	run := lwm2mtest.RunClient(t, srv, c, "wrongpsk")
	writeURI(t, run, fmt.Sprintf("coaps://127.0.0.1:%d/fw", port+1))
	waitObj(t, obj, fwupdate.StateIdle, fwupdate.ResultConnectionLost)
}

// A reboot mid-download over CoAP resumes at the block after the persisted
// offset: the server sees the block numbers continue, not start over.
func TestResumeAfterRebootCoAP(t *testing.T) {
	img := image(400_000, 16)
	uri, nums := blockServer(t, img, []byte("etag-1"))
	srv := lwm2mtest.Start(t, "")
	store := fwupdate.FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
	h := &bufHandlers{}
	obj, run := boot(t, srv, h, store, "resume-coap")
	writeURI(t, run, uri)
	for h.written.Load() < 150_000 {
		time.Sleep(5 * time.Millisecond)
	}
	obj.Close()
	run.Stop()
	firstRun := len(nums())
	h.written.Store(0)
	obj2, _ := boot(t, srv, h, store, "resume-coap")
	waitObj(t, obj2, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	if h.sum() != sha256.Sum256(img) {
		t.Fatal("resumed image differs from the source")
	}
	all := nums()
	if len(h.resumes) != 1 || h.resumes[0]%1024 != 0 {
		t.Fatalf("resumes %v, want one at a block boundary", h.resumes)
	}
	if want := h.resumes[0] / 1024; all[firstRun] != want {
		t.Fatalf("after the reboot the first block asked for is %d, want %d (continuing)", all[firstRun], want)
	}
}

// Pull over coaps+tcp (CoAP over TLS, RFC 8323) and coaps with a
// certificate from libcoap's OpenSSL server, trusted through
// SecurityConfig.
func TestPullCertificatesFromLibcoap(t *testing.T) {
	img := image(200_000, 17)
	port, certPEM, pool := startCertServer(t, img)
	block, _ := pem.Decode(certPEM)
	for _, tc := range []struct {
		scheme, trust string
		sec           *download.Security
	}{
		{"coaps+tcp", "ca", &download.Security{RootCAs: pool, ServerName: "localhost"}},
		{"coaps", "ca", &download.Security{RootCAs: pool, ServerName: "localhost"}},
		{"coaps+tcp", "pin", &download.Security{ServerCertificate: block.Bytes}},
		{"coaps", "pin", &download.Security{ServerCertificate: block.Bytes}},
	} {
		scheme := tc.scheme
		t.Run(scheme+"/"+tc.trust, func(t *testing.T) {
			srv := lwm2mtest.Start(t, "")
			h := &bufHandlers{sec: tc.sec}
			obj, run := boot(t, srv, h, &fwupdate.MemoryStore{}, "cert-"+strings.ReplaceAll(scheme, "+", "-")+"-"+tc.trust)
			writeURI(t, run, fmt.Sprintf("%s://127.0.0.1:%d/fw", scheme, port+1))
			waitObj(t, obj, fwupdate.StateDownloaded, fwupdate.ResultInitial)
			if h.sum() != sha256.Sum256(img) {
				t.Fatal("image hash differs from the source")
			}
		})
	}
}

// A pin that does not match the server's certificate fails the download
// with Connection lost, over TLS and DTLS alike.
func TestPullWrongPinFails(t *testing.T) {
	port, _, _ := startCertServer(t, image(5000, 18))
	otherPEM, _, _ := selfSigned(t)
	other, _ := pem.Decode(otherPEM)
	for _, scheme := range []string{"coaps+tcp", "coaps"} {
		t.Run(scheme, func(t *testing.T) {
			srv := lwm2mtest.Start(t, "")
			h := &bufHandlers{sec: &download.Security{ServerCertificate: other.Bytes}}
			obj, run := boot(t, srv, h, &fwupdate.MemoryStore{}, "wrongpin-"+strings.ReplaceAll(scheme, "+", "-"))
			writeURI(t, run, fmt.Sprintf("%s://127.0.0.1:%d/fw", scheme, port+1))
			waitObj(t, obj, fwupdate.StateIdle, fwupdate.ResultConnectionLost)
		})
	}
}

// startCertServer runs libcoap's OpenSSL server with a new self-signed
// certificate, serving img at /fw, and returns its port (TLS and DTLS on
// port+1), the certificate and a pool that trusts it.
func startCertServer(t *testing.T, img []byte) (port int, certPEM []byte, pool *x509.CertPool) {
	bin := libcoaptest.NeedBinary(t, "coap-server-openssl")
	dir := t.TempDir()
	certPEM, keyPEM, pool := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// -n: the server does not ask for a client certificate.
	port = libcoaptest.StartServer(t, bin, "-c", certFile, "-j", keyFile, "-n")
	libcoaptest.PutFile(t, port, "fw", img)
	return port, certPEM, pool
}

// selfSigned makes an ECDSA P-256 certificate for localhost and 127.0.0.1.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), pool
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
)

// Arguments Get would reject or silently adjust are usage errors (exit 2),
// and leave no output file behind.
func TestRunDownloadUsageErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "fw.bin")
	for _, args := range [][]string{
		{"coap://127.0.0.1:1/fw", "-o", out, "-block-size", "17"},
		{"coap://127.0.0.1:1/fw", "-o", out, "-block-size", "2048"},
		{"coap://127.0.0.1:1/fw", "-o", out, "-window", "100000"},
		{"coap://127.0.0.1:1/fw", "-o", out, "-window", "0"},
		{"coap://127.0.0.1:1/fw", "-o", out, "-retries", "-1"},
		{"http://127.0.0.1:1/fw", "-o", out, "-timeout", "0s"},
		{"::not a uri", "-o", out},
		{"ftp://127.0.0.1/fw", "-o", out},
		{"coap://127.0.0.1:99999/fw", "-o", out},
		{"coaps://127.0.0.1:1/fw", "-o", out}, // no credentials
		{"coap://127.0.0.1:1/fw", "-o", filepath.Join(dir, "no", "such", "dir", "fw.bin")},
	} {
		var stdout, stderr bytes.Buffer
		if code := runDownload(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2: %s", args, code, stderr.String())
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Fatalf("%q left %s: %v", args, out, err)
		}
	}
}

// A failed download leaves no empty file it created; a retry says why.
func TestRunDownloadFailureLeavesNoFile(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close() // connections are refused from now on
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	for _, tc := range []struct{ name, uri, want string }{
		{"refused", "http://" + closed + "/fw", "retrying in 1s: "},
		{"404", srv.URL + "/fw", "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "fw.bin")
			var stdout, stderr syncbuf.Buffer
			code := runDownload(context.Background(), []string{tc.uri, "-o", out, "-retries", "1"}, &stdout, &stderr)
			if code != 1 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, want 1 and %q: %s", code, tc.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "0 bytes") || strings.Contains(stderr.String(), "B/s") {
				t.Errorf("progress lines while nothing arrived: %s", stderr.String())
			}
			for _, p := range []string{out, out + ".etag"} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("%s left behind: %v", filepath.Base(p), err)
				}
			}
		})
	}
}

// halfServer serves half the image under a strong ETag and cuts the
// connection; later requests get 503 until healthy is set, then the image.
func halfServer(t *testing.T, data []byte, healthy *atomic.Bool, cut chan<- struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if healthy.Load() {
			w.Header().Set("ETag", `"v1"`)
			http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(data))
			return
		}
		if r.Header.Get("Range") != "" {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		if cut != nil {
			cut <- struct{}{}
			<-r.Context().Done()
		}
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// What arrived before a failure stays, with its resume record, and the
// message says so; the next run resumes it.
func TestRunDownloadFailureKeepsResumable(t *testing.T) {
	data := make([]byte, 300_000)
	rand.Read(data)
	var healthy atomic.Bool
	srv := halfServer(t, data, &healthy, nil)
	out := filepath.Join(t.TempDir(), "fw.bin")
	var stdout, stderr syncbuf.Buffer
	code := runDownload(context.Background(), []string{srv.URL + "/fw", "-o", out, "-retries", "1"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "run the same command again to resume") {
		t.Fatalf("exit %d, want 1 and a resume hint: %s", code, stderr.String())
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != int64(len(data)/2) {
		t.Fatalf("partial file: %v %v, want %d bytes", fi, err, len(data)/2)
	}
	healthy.Store(true)
	stderr = syncbuf.Buffer{}
	if code := runDownload(context.Background(), []string{srv.URL + "/fw", "-o", out}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "resumed") {
		t.Fatalf("rerun: exit %d: %s", code, stderr.String())
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("resumed file differs")
	}
}

// A pre-existing partial file stays as it is when the download fails.
func TestRunDownloadFailureKeepsExistingPartial(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	out := filepath.Join(t.TempDir(), "fw.bin")
	os.WriteFile(out, []byte("first part"), 0o644)
	os.WriteFile(out+".etag", []byte(`"v1"`), 0o644)
	var stdout, stderr bytes.Buffer
	if code := runDownload(context.Background(), []string{srv.URL + "/fw", "-o", out}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr.String())
	}
	if got, _ := os.ReadFile(out); string(got) != "first part" {
		t.Errorf("partial file now %q", got)
	}
	if got, _ := os.ReadFile(out + ".etag"); string(got) != `"v1"` {
		t.Errorf("resume record now %q", got)
	}
}

// Ctrl-C (the context main cancels on SIGINT) exits 1, keeps what arrived
// and says that a rerun resumes.
func TestRunDownloadInterrupted(t *testing.T) {
	data := make([]byte, 300_000)
	rand.Read(data)
	var healthy atomic.Bool
	cut := make(chan struct{}, 1)
	srv := halfServer(t, data, &healthy, cut)
	out := filepath.Join(t.TempDir(), "fw.bin")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-cut; time.Sleep(50 * time.Millisecond); cancel() }()
	var stdout, stderr syncbuf.Buffer
	code := runDownload(ctx, []string{srv.URL + "/fw", "-o", out}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "interrupted") || !strings.Contains(stderr.String(), "run the same command again to resume") {
		t.Fatalf("exit %d, want 1, interrupted, and a resume hint: %s", code, stderr.String())
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != int64(len(data)/2) {
		t.Fatalf("partial file: %v %v, want %d bytes", fi, err, len(data)/2)
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
)

func TestRunDownload(t *testing.T) {
	data := make([]byte, 300_000)
	rand.Read(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/fw" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "fw.bin")
	ctx := context.Background()

	var stdout, stderr bytes.Buffer
	// Flags after the URI.
	if code := runDownload(ctx, []string{srv.URL + "/fw", "-o", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("file hash differs")
	}
	if _, err := os.Stat(out + ".etag"); !os.IsNotExist(err) {
		t.Errorf("resume record left behind: %v", err)
	}

	// Resume a partial file recorded with its ETag.
	os.WriteFile(out, data[:100_000], 0o644)
	os.WriteFile(out+".etag", []byte(`"v1"`), 0o644)
	stderr.Reset()
	if code := runDownload(ctx, []string{"-o", out, srv.URL + "/fw"}, &stdout, &stderr); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, stderr.String())
	}
	got, _ = os.ReadFile(out)
	if !bytes.Equal(got, data) || !bytes.Contains(stderr.Bytes(), []byte("resumed")) {
		t.Fatalf("resume: file differs or not resumed: %s", stderr.String())
	}

	if code := runDownload(ctx, []string{srv.URL + "/missing", "-o", filepath.Join(dir, "x")}, &stdout, &stderr); code != 1 {
		t.Errorf("404: exit %d, want 1", code)
	}
	for _, args := range [][]string{
		{srv.URL + "/fw", "-bogus"},
		{srv.URL + "/fw"},
		{"-o", out},
		{srv.URL + "/fw", "extra", "-o", out},
	} {
		if code := runDownload(ctx, args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	stdout.Reset()
	if code := runDownload(ctx, []string{"-h"}, &stdout, &stderr); code != 0 || !bytes.Contains(stdout.Bytes(), []byte("usage")) {
		t.Errorf("-h: exit %d, stdout %q", code, stdout.String())
	}
}

// An output that is not a regular file is written as a stream: standard
// output as "-", a device such as /dev/null, a pipe. It gets no resume
// record and no fsync (which a device or pipe refuses).
func TestRunDownloadToStream(t *testing.T) {
	data := make([]byte, 200_000)
	rand.Read(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	ctx := context.Background()

	t.Run("stdout", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := runDownload(ctx, []string{srv.URL + "/fw", "-o", "-"}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if sha256.Sum256(stdout.Bytes()) != sha256.Sum256(data) {
			t.Fatalf("standard output holds %d bytes that differ from the %d served", stdout.Len(), len(data))
		}
		if _, err := os.Stat("-.etag"); !os.IsNotExist(err) {
			t.Errorf("a resume record was written for standard output: %v", err)
		}
	})
	t.Run("dev-null", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := runDownload(ctx, []string{srv.URL + "/fw", "-o", os.DevNull}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if _, err := os.Stat(os.DevNull + ".etag"); !os.IsNotExist(err) {
			t.Errorf("a resume record was written beside %s: %v", os.DevNull, err)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		fifo := filepath.Join(t.TempDir(), "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Skip("mkfifo:", err)
		}
		got := make(chan []byte, 1)
		go func() {
			f, err := os.Open(fifo)
			if err != nil {
				got <- nil
				return
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			got <- b
		}()
		var stdout, stderr bytes.Buffer
		if code := runDownload(ctx, []string{srv.URL + "/fw", "-o", fifo}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if b := <-got; sha256.Sum256(b) != sha256.Sum256(data) {
			t.Fatalf("the pipe carried %d bytes that differ from the %d served", len(b), len(data))
		}
	})
}

// A reader that leaves a pipe early ends the download with an error; the
// downloader must not keep the pipe open for reading itself and block on
// a full buffer forever.
func TestRunDownloadPipeReaderGone(t *testing.T) {
	data := make([]byte, 1<<20) // far more than a pipe buffer
	rand.Read(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			return
		}
		io.ReadFull(f, make([]byte, 1000))
		f.Close()
	}()
	code := make(chan int, 1)
	var stdout, stderr syncbuf.Buffer
	go func() {
		code <- runDownload(context.Background(), []string{srv.URL + "/fw", "-o", fifo}, &stdout, &stderr)
	}()
	select {
	case c := <-code:
		if c != 1 {
			t.Fatalf("exit %d, want 1: %s", c, stderr.String())
		}
	case <-time.After(time.Minute): // a hang, not a slow run
		t.Fatal("the download still runs a minute after the pipe's reader left")
	}
}

// A transfer that must start over after bytes went to a stream fails: the
// reader already has them, and a second copy would corrupt what it holds.
func TestRunDownloadStreamRestartFails(t *testing.T) {
	data := make([]byte, 200_000)
	rand.Read(data)
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			// Half the image under ETag v1, then the connection drops.
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		// The image changed meanwhile: a resume gets the whole new one.
		w.Header().Set("ETag", `"v2"`)
		http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)

	var stdout, stderr bytes.Buffer
	code := runDownload(context.Background(), []string{srv.URL + "/fw", "-o", "-"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "start over") {
		t.Fatalf("exit %d, want 1 with a reason: %s", code, stderr.String())
	}
	if stdout.Len() > len(data)/2 {
		t.Errorf("%d bytes reached standard output; only the first run's %d may", stdout.Len(), len(data)/2)
	}
}

package download

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// rangeLog records the Range and If-Match headers of each request.
type rangeLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *rangeLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, r.Header.Get("Range")+"|"+r.Header.Get("If-Match"))
}

func (l *rangeLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.reqs...)
}

// serveImage serves data with etag through http.ServeContent, which
// implements Range, If-Match (412) and 206.
func serveImage(data []byte, etag string, log *rangeLog) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		if r.URL.Path != "/fw" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", etag)
		http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(data))
	})
}

func partialSink(t *testing.T, held []byte) *memSink {
	s := &memSink{}
	s.buf.Write(held)
	return s
}

func TestHTTPFull(t *testing.T) {
	data := randomBytes(t, 200_000)
	var log rangeLog
	srv := httptest.NewServer(serveImage(data, `"v1"`, &log))
	defer srv.Close()
	var sink memSink
	res, err := Get(getCtx(t), Request{URI: srv.URL + "/fw"}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) || string(res.ETag) != `"v1"` {
		t.Fatalf("image differs or ETag %q", res.ETag)
	}
	if sink.opens[0].size != int64(len(data)) {
		t.Errorf("Open size = %d, want %d", sink.opens[0].size, len(data))
	}
}

func TestHTTPResumeRange(t *testing.T) {
	data := randomBytes(t, 100_000)
	var log rangeLog
	srv := httptest.NewServer(serveImage(data, `"v1"`, &log))
	defer srv.Close()
	sink := partialSink(t, data[:40_000])
	res, err := Get(getCtx(t), Request{URI: srv.URL + "/fw", ETag: []byte(`"v1"`), Offset: 40_000}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) || !res.Resumed {
		t.Fatalf("image differs or not resumed: %+v", res)
	}
	if got := log.get(); len(got) != 1 || got[0] != `bytes=40000-|"v1"` {
		t.Errorf("requests = %q", got)
	}
	if sink.opens[0].offset != 40_000 {
		t.Errorf("Open offset = %d", sink.opens[0].offset)
	}
}

func TestHTTPResumeIgnoredRange(t *testing.T) {
	data := randomBytes(t, 50_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		w.Write(data) // 200 with the whole body, Range ignored
	}))
	defer srv.Close()
	sink := partialSink(t, data[:10_000])
	res, err := Get(getCtx(t), Request{URI: srv.URL + "/fw", ETag: []byte(`"v1"`), Offset: 10_000}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatalf("image corrupted: %d bytes", len(sink.bytes()))
	}
	if res.Resumed || sink.opens[0].offset != 0 {
		t.Errorf("want a restart from 0, got %+v opens %+v", res, sink.opens)
	}
}

func TestHTTPResumeChangedETag412(t *testing.T) {
	data := randomBytes(t, 50_000)
	var log rangeLog
	srv := httptest.NewServer(serveImage(data, `"v2"`, &log))
	defer srv.Close()
	sink := partialSink(t, randomBytes(t, 20_000))
	res, err := Get(getCtx(t), Request{URI: srv.URL + "/fw", ETag: []byte(`"v1"`), Offset: 20_000}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) || res.Restarts != 1 {
		t.Fatalf("image differs or restarts = %d", res.Restarts)
	}
	if got := log.get(); len(got) != 2 || got[0] != `bytes=20000-|"v1"` || got[1] != "|" {
		t.Errorf("requests = %q, want a refused resume then a plain GET", got)
	}
}

func TestHTTPWeakETagNotUsed(t *testing.T) {
	data := randomBytes(t, 30_000)
	var log rangeLog
	srv := httptest.NewServer(serveImage(data, `W/"v1"`, &log))
	defer srv.Close()
	sink := partialSink(t, data[:10_000])
	if _, err := Get(getCtx(t), Request{URI: srv.URL + "/fw", ETag: []byte(`W/"v1"`), Offset: 10_000}, sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	if got := log.get(); len(got) != 1 || got[0] != "|" {
		t.Errorf("requests = %q, want no Range or If-Match", got)
	}
}

func TestHTTPNotFound(t *testing.T) {
	srv := httptest.NewServer(serveImage(nil, `"x"`, &rangeLog{}))
	defer srv.Close()
	_, err := Get(getCtx(t), Request{URI: srv.URL + "/missing"}, &memSink{})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

// TestHTTPCutResumes cuts the first response short; the retry resumes
// with Range from where the sink stands.
func TestHTTPCutResumes(t *testing.T) {
	data := randomBytes(t, 100_000)
	var log rangeLog
	first := true
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cut := first
		first = false
		mu.Unlock()
		if cut {
			log.add(r)
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Length", "100000")
			w.Write(data[:30_000])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		serveImage(data, `"v1"`, &log).ServeHTTP(w, r)
	}))
	defer srv.Close()
	var sink memSink
	res, err := Get(getCtx(t), Request{URI: srv.URL + "/fw", Retries: 2, RetryDelay: time.Millisecond}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	got := log.get()
	if len(got) != 2 || !strings.HasSuffix(got[1], `-|"v1"`) {
		t.Errorf("requests = %q, want a ranged resume", got)
	}
	if res.Restarts != 0 {
		t.Errorf("restarts = %d", res.Restarts)
	}
}

func TestHTTPS(t *testing.T) {
	data := randomBytes(t, 10_000)
	srv := httptest.NewTLSServer(serveImage(data, `"v1"`, &rangeLog{}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: srv.URL + "/fw", Security: &Security{RootCAs: pool}}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	_, err := Get(getCtx(t), Request{URI: srv.URL + "/fw", Security: &Security{RootCAs: x509.NewCertPool()}, Retries: 3}, &memSink{})
	if !errors.Is(err, ErrConnection) {
		t.Fatalf("untrusted: err = %v, want ErrConnection", err)
	}
}

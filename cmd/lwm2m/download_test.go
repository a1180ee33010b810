package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
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

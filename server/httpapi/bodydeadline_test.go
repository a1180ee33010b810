package httpapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/server"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// A peer that starts a request body and never ends it gets an answer
// (or a closed connection) once BodyTimeout passes, signed in or not:
// before, the sign-in route and every route's 401 waited on the body
// forever, holding the connection (found by trickling chunked bodies at
// the lwm2m binary).
func TestAPIBodyDeadlineCutsTrickledBody(t *testing.T) {
	s := startServer(t, &server.Server{})
	hs := apiServer(t, s, Config{BodyTimeout: 50 * time.Millisecond})
	host := strings.TrimPrefix(hs.URL, "http://")
	for _, path := range []string{"/api/session", "/api/devices/dev/write", "/"} {
		t.Run(path, func(t *testing.T) {
			c, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", path, host)
			// A guard against the hang this test is about, not a timing
			// assertion.
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer to a body that never ends: %v", err)
			}
			if err == nil {
				resp.Body.Close()
				t.Logf("answer %s", resp.Status)
			}
		})
	}
}

// An authenticated body may take longer than BodyTimeout as long as it
// keeps coming: a package upload over a slow link is not cut off.
func TestAPIBodyDeadlineSlowAuthenticatedBody(t *testing.T) {
	s := startServer(t, &server.Server{})
	hs := apiServer(t, s, Config{BodyTimeout: time.Second})
	pr, pw := io.Pipe()
	go func() {
		// Eight pieces, 300 ms apart: longer in all than BodyTimeout,
		// never silent for as long.
		for _, piece := range []string{`{"pa`, `th":`, `"/3/`, `0/1`, `4",`, `"val`, `ue":"x"`, `}`} {
			time.Sleep(300 * time.Millisecond)
			if _, err := pw.Write([]byte(piece)); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequestWithContext(context.Background(), "POST", hs.URL+"/api/devices/nosuch/write", pr)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	// The whole body was read: the answer is about the device, not the
	// body.
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("got %s %s, want 404 (device not registered)", resp.Status, b)
	}
}

// The number of event streams is bounded: past maxEventStreams a new one
// gets 503 with Retry-After, and a closed one frees its place. Before, an
// API client could open them without end (2000 streams took 56 MB on the
// lwm2m binary, and nothing stopped more).
func TestEventStreamsBounded(t *testing.T) {
	s := startServer(t, &server.Server{})
	hs := apiServer(t, s, Config{})
	open := func(ctx context.Context) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/api/events", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ctx, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	var first context.CancelFunc
	for i := range maxEventStreams {
		c, cancel := context.WithCancel(ctx)
		defer cancel()
		if i == 0 {
			first = cancel
		}
		resp := open(c)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %s", i, resp.Status)
		}
		defer resp.Body.Close()
	}
	resp := open(ctx)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("stream %d: %s (Retry-After %q), want 503", maxEventStreams+1, resp.Status, resp.Header.Get("Retry-After"))
	}
	first()
	// A closed stream frees its place: a new one is taken again.
	var again *http.Response
	waitfor.Until(t, 10*time.Second, func() error {
		resp := open(ctx)
		if resp.StatusCode == http.StatusOK {
			again = resp
			return nil
		}
		resp.Body.Close()
		return errors.New("the closed stream still counts: " + resp.Status)
	})
	again.Body.Close()
}

package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

const testToken = "test-token-0123456789"

// apiServer serves s's API on httptest with testToken.
func apiServer(t *testing.T, s *Server, cfg APIConfig) *httptest.Server {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	hs := httptest.NewServer(s.APIHandler(cfg))
	t.Cleanup(hs.Close)
	return hs
}

// apiDo sends an authenticated request; a body starting with '{' is JSON.
func apiDo(t *testing.T, ctx context.Context, hs *httptest.Server, method, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, hs.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestAPI(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	hs := apiServer(t, s, APIConfig{})
	do := func(method, path, body string) *http.Response {
		t.Helper()
		return apiDo(t, context.Background(), hs, method, path, body)
	}

	var regs []Registration
	json.NewDecoder(do("GET", "/api/devices", "").Body).Decode(&regs)
	if len(regs) != 1 || regs[0].Endpoint != "dev1" {
		t.Errorf("devices: %+v", regs)
	}
	var c APIContent
	resp := do("GET", "/api/devices/dev1/read?path=/3/0/0&format=text", "")
	json.NewDecoder(resp.Body).Decode(&c)
	if resp.StatusCode != 200 || len(c.Records) != 1 || c.Records[0].Value != "Acme" || c.Records[0].Type != "string" {
		t.Errorf("read: %s %+v", resp.Status, c)
	}
	if resp := do("POST", "/api/devices/dev1/write", `{"path":"/1/0/1","value":"300","replace":true}`); resp.StatusCode != 204 {
		t.Errorf("write: %s", resp.Status)
	}
	if v := d.get("/1/0/1"); v != "300" {
		t.Errorf("after write %q", v)
	}
	if resp := do("POST", "/api/devices/dev1/execute", `{"path":"/3/0/4"}`); resp.StatusCode != 204 {
		t.Errorf("execute: %s", resp.Status)
	}
	resp = do("GET", "/api/devices/dev1/read?path=/3/0/77", "")
	var e map[string]string
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusBadGateway || e["coap_code"] != "4.04" {
		t.Errorf("read of missing resource: %s %v", resp.Status, e)
	}
	if resp := do("GET", "/api/devices/nobody/read?path=/3/0/0", ""); resp.StatusCode != 404 {
		t.Errorf("unknown endpoint: %s", resp.Status)
	}
	if resp := do("GET", "/api/devices/dev1/read?path=/x", ""); resp.StatusCode != 400 {
		t.Errorf("bad path: %s", resp.Status)
	}

	f, _ := writeImage(t, 4000)
	pkg, _ := os.ReadFile(f)
	resp = apiUpload(t, context.Background(), hs, "ep=dev1&method=push&timeout=15s", pkg)
	sc := bufio.NewScanner(resp.Body)
	var last APIUpdateLine
	lines := 0
	for sc.Scan() {
		lines++
		last = APIUpdateLine{}
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
	}
	if len(last.Results) != 1 || last.Results[0].Result != 1 || last.Results[0].ResultName != "Success" || lines < 3 {
		t.Errorf("update: %d lines, last %+v", lines, last)
	}
}

func apiUpload(t *testing.T, ctx context.Context, hs *httptest.Server, query string, pkg []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", hs.URL+"/api/update?"+query, bytes.NewReader(pkg))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestAPIRefusesForeignRequests: a web page's cross-site POST (text/plain,
// foreign Origin, no token) once rebooted a device. Each defence alone
// now refuses it, before the device hears of it.
func TestAPIRefusesForeignRequests(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	hs := apiServer(t, s, APIConfig{})
	_, port, _ := strings.Cut(strings.TrimPrefix(hs.URL, "http://127.0.0.1"), ":")
	cases := []struct {
		name, auth, ctype, origin, host string
		status                          int
	}{
		{"web page", "", "text/plain", "http://evil.example", "", http.StatusUnauthorized},
		{"no token", "", "application/json", "", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", "application/json", "", "", http.StatusUnauthorized},
		{"not bearer", "Basic " + testToken, "application/json", "", "", http.StatusUnauthorized},
		{"foreign origin", "Bearer " + testToken, "application/json", "http://evil.example", "", http.StatusForbidden},
		{"DNS rebinding", "Bearer " + testToken, "application/json", "", "evil.example:" + port, http.StatusForbidden},
		{"other port", "Bearer " + testToken, "application/json", "", "127.0.0.1:1", http.StatusForbidden},
		{"text/plain", "Bearer " + testToken, "text/plain", "", "", http.StatusUnsupportedMediaType},
		{"form", "Bearer " + testToken, "application/x-www-form-urlencoded", "", "", http.StatusUnsupportedMediaType},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", hs.URL+"/api/devices/dev1/execute", strings.NewReader(`{"path":"/3/0/4"}`))
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			req.Header.Set("Content-Type", c.ctype)
			if c.origin != "" {
				req.Header.Set("Origin", c.origin)
			}
			if c.host != "" {
				req.Host = c.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e map[string]string
			jerr := json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != c.status || jerr != nil || e["error"] == "" {
				t.Errorf("%s, want %d with a JSON error: %v %v", resp.Status, c.status, e, jerr)
			}
			if c.status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	d.mu.Lock()
	execs := d.execs
	d.mu.Unlock()
	if execs != 0 {
		t.Errorf("the device executed %d times", execs)
	}
	// The API's own origin and localhost are fine.
	for _, h := range []string{"", "localhost:" + port, "[::1]:" + port} {
		req, _ := http.NewRequest("POST", hs.URL+"/api/devices/dev1/execute", strings.NewReader(`{"path":"/3/0/4"}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Origin", hs.URL)
		if h != "" {
			req.Host = h
			req.Header.Set("Origin", "http://"+h)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("own origin, Host %q: %s", h, resp.Status)
		}
	}
}

// TestAPIErrorsAreJSON: every error the API answers is {"error": ...}
// with a JSON content type, as docs/SERVER.md says.
func TestAPIErrorsAreJSON(t *testing.T) {
	s := startServer(t, &Server{})
	newFakeDevice(t, s.LocalAddr().String(), "dev1")
	pkgDir := t.TempDir()
	hs := apiServer(t, s, APIConfig{MaxPackageSize: 10, PackageDir: pkgDir})
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/nothing", "", 404},
		{"DELETE", "/api/devices", "", 404},
		{"GET", "/api/devices/nobody", "", 404},
		{"GET", "/api/devices/dev1/read?path=/3/0/0&format=bogus", "", 400},
		{"GET", "/api/devices/dev1/read?path=/3/0/0&timeout=soon", "", 400},
		{"GET", "/api/devices/dev1/discover?path=/3/x", "", 400},
		{"POST", "/api/devices/dev1/write", "{bad", 400},
		{"POST", "/api/devices/dev1/write", `{"path":"/1/0/1","payload":"AA=="}`, 400},
		{"POST", "/api/update?ep=dev1", `{"endpoint":"dev1","package":"/etc/passwd"}`, 415},
		{"POST", "/api/update?ep=nobody", "", 415},
	} {
		resp := apiDo(t, context.Background(), hs, c.method, c.path, c.body)
		var e map[string]string
		jerr := json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != c.status || jerr != nil || e["error"] == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %s %s, want %d with a JSON error: %v %v", c.method, c.path, resp.Status, resp.Header.Get("Content-Type"), c.status, e, jerr)
		}
	}
	for _, c := range []struct {
		query  string
		pkg    []byte
		status int
	}{
		{"ep=nobody", []byte("x"), 404},
		{"ep=dev1&method=fax", []byte("x"), 400},
		{"ep=dev1&timeout=-1s", []byte("x"), 400},
		{"match=[", []byte("x"), 400},
		{"", []byte("x"), 400},
		{"ep=dev1", nil, 400},
		{"ep=dev1", make([]byte, 11), 413},
	} {
		resp := apiUpload(t, context.Background(), hs, c.query, c.pkg)
		var e map[string]string
		jerr := json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode != c.status || jerr != nil || e["error"] == "" {
			t.Errorf("update?%s with %d bytes: %s, want %d with a JSON error: %v %v", c.query, len(c.pkg), resp.Status, c.status, e, jerr)
		}
	}
	if left, _ := os.ReadDir(pkgDir); len(left) != 0 {
		t.Errorf("refused uploads left files behind: %v", left)
	}
	s.mu.Lock()
	published := len(s.images)
	s.mu.Unlock()
	if published != 0 {
		t.Errorf("%d images published by refused requests", published)
	}
}

// TestAPIUpdateKeepsNoServerPath: the API takes the package in the
// request, never a path on the server's host, and keeps its copy only
// while the update runs.
func TestAPIUpdateKeepsNoServerPath(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	dir := t.TempDir()
	hs := apiServer(t, s, APIConfig{PackageDir: dir})
	f, sum := writeImage(t, 5000)
	pkg, _ := os.ReadFile(f)
	resp := apiUpload(t, context.Background(), hs, "ep=dev1&method=pull&timeout=20s", pkg)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"result_name":"Success"`) {
		t.Fatalf("update: %s %s", resp.Status, b)
	}
	if sha256.Sum256(d.firmware()) != sum {
		t.Error("device got another image")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("package copies left behind: %v", left)
	}
	if _, ok := s.lookupImage(hex.EncodeToString(sum[:8])); ok {
		t.Error("the package is still published after the update")
	}
}

// stallDevice registers and answers like a device that accepts a
// Package URI and then never downloads it: an update waits until its
// context ends.
type stallDevice struct {
	cc  *udpclient.Conn
	uri chan string
}

func newStallDevice(t *testing.T, server, ep string) *stallDevice {
	d := &stallDevice{uri: make(chan string, 4)}
	cc, err := coapudp.Dial(server, options.WithHandlerFunc(func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
		p, _ := r.Options().Path()
		switch r.Code() {
		case codes.GET:
			v := "0"
			if strings.HasSuffix(p, "5/0/9") {
				v = "2"
			}
			_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader(v))
		default:
			body, _ := r.ReadBody()
			if strings.HasSuffix(p, "5/0/1") && len(body) > 0 {
				d.uri <- string(body)
			}
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	d.cc = cc
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/rd", message.AppLinkFormat, strings.NewReader("</5/0>"),
		message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)})
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("register: %v %v", resp, err)
	}
	return d
}

// TestUpdateWithdrawsImage: whatever way an update ends, its image is no
// longer served.
func TestUpdateWithdrawsImage(t *testing.T) {
	published := func(s *Server, sum [32]byte) bool {
		_, ok := s.lookupImage(hex.EncodeToString(sum[:8]))
		return ok
	}
	waitGone := func(t *testing.T, s *Server, sum [32]byte) {
		t.Helper()
		waitfor.Until(t, 10*time.Second, func() error {
			if published(s, sum) {
				return errors.New("the image is still published after the update ended")
			}
			return nil
		})
	}
	t.Run("success", func(t *testing.T) {
		s := startServer(t, &Server{})
		newFakeDevice(t, s.LocalAddr().String(), "dev1")
		f, sum := writeImage(t, 3000)
		if _, err := s.Update(ctxT(t), "dev1", f, PullCoAP, nil); err != nil {
			t.Fatal(err)
		}
		waitGone(t, s, sum)
	})
	t.Run("failure", func(t *testing.T) {
		s := startServer(t, &Server{})
		d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
		d.mu.Lock()
		d.failWith = 5
		d.mu.Unlock()
		f, sum := writeImage(t, 3000)
		if _, err := s.Update(ctxT(t), "dev1", f, PullCoAP, nil); err == nil {
			t.Fatal("update succeeded")
		}
		waitGone(t, s, sum)
	})
	stalled := func(t *testing.T) (*Server, *stallDevice, string, [32]byte) {
		s := startServer(t, &Server{})
		d := newStallDevice(t, s.LocalAddr().String(), "dev1")
		f, sum := writeImage(t, 3000)
		return s, d, f, sum
	}
	for _, how := range []string{"timeout", "cancel"} {
		t.Run(how, func(t *testing.T) {
			s, d, f, sum := stalled(t)
			ectx := &expireCtx{Context: ctxT(t), done: make(chan struct{})}
			ctx, cancel := context.WithCancel(ectx)
			defer cancel()
			var wg sync.WaitGroup
			var err error
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err = s.Update(ctx, "dev1", f, PullCoAP, nil)
			}()
			<-d.uri
			if !published(s, sum) {
				t.Error("image not published while the device should fetch it")
			}
			want := context.Canceled
			if how == "cancel" {
				cancel()
			} else {
				ectx.expire()
				want = context.DeadlineExceeded
			}
			wg.Wait()
			if !errors.Is(err, want) {
				t.Fatalf("update: %v, want %v", err, want)
			}
			waitGone(t, s, sum)
		})
	}
	t.Run("client disconnect", func(t *testing.T) {
		s, d, f, sum := stalled(t)
		pkgDir := t.TempDir()
		hs := apiServer(t, s, APIConfig{PackageDir: pkgDir})
		pkg, _ := os.ReadFile(f)
		ctx, cancel := context.WithCancel(ctxT(t))
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequestWithContext(ctx, "POST", hs.URL+"/api/update?ep=dev1", bytes.NewReader(pkg))
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/octet-stream")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		<-d.uri
		if left, _ := os.ReadDir(pkgDir); len(left) != 1 {
			t.Errorf("package files during the update: %v", left)
		}
		cancel()
		<-done
		waitGone(t, s, sum)
		waitfor.Until(t, 10*time.Second, func() error {
			if left, _ := os.ReadDir(pkgDir); len(left) != 0 {
				return fmt.Errorf("package copy left after the client went away: %v", left)
			}
			return nil
		})
	})
}

// TestLogIsTerminalSafe: device-provided strings in the server's log are
// quoted by slog's text handler, so they cannot forge log lines or reach
// the terminal as escape sequences.
func TestLogIsTerminalSafe(t *testing.T) {
	var buf syncbuf.Buffer
	s := startServer(t, &Server{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	newStallDevice(t, s.LocalAddr().String(), "evil\nlevel=ERROR msg=forged\x1b[2J")
	out := buf.String()
	if !strings.Contains(out, `ep="evil\nlevel=ERROR msg=forged\x1b[2J"`) {
		t.Errorf("endpoint not quoted in the log:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "level=ERROR") || strings.Contains(line, "\x1b") {
			t.Errorf("log line %q", line)
		}
	}
}

// TestUpdateChecksBeforeSending: a package that is empty, or a method the
// device's /5/0/9 rules out, is refused at once, before anything reaches
// the device; the log says how each update ended.
func TestUpdateChecksBeforeSending(t *testing.T) {
	var log syncbuf.Buffer
	s := startServer(t, &Server{HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&log, nil))})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 3000)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := s.Update(ctxT(t), "dev1", empty, Push, nil); !errors.Is(err, ErrEmptyPackage) {
		t.Errorf("empty package: %v", err)
	}
	for _, c := range []struct {
		delivery string
		method   Method
	}{{"0", Push}, {"1", PullCoAP}, {"1", PullHTTP}} {
		d.mu.Lock()
		d.res["/5/0/9"] = c.delivery
		d.mu.Unlock()
		_, err := s.Update(ctxT(t), "dev1", f, c.method, nil)
		if !errors.Is(err, ErrDeliveryMethod) || !strings.Contains(err.Error(), "/5/0/9 = "+c.delivery) {
			t.Errorf("/5/0/9 = %s, %v: %v", c.delivery, c.method, err)
		}
	}
	if len(d.firmware()) != 0 || d.get("/5/0/1") != "" {
		t.Errorf("the device was sent something: %d bytes pushed, URI %q", len(d.firmware()), d.get("/5/0/1"))
	}
	d.mu.Lock()
	d.res["/5/0/9"] = "2"
	d.mu.Unlock()
	if _, err := s.Update(ctxT(t), "dev1", f, Push, nil); err != nil {
		t.Errorf("/5/0/9 = 2, push: %v", err)
	}
	out := log.String()
	for _, want := range []string{`msg="firmware update failed" ep=dev1 method=push`, "ErrEmpty", "push only", `msg="firmware update succeeded" ep=dev1 method=push`} {
		if want == "ErrEmpty" {
			want = ErrEmptyPackage.Error()
		}
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// expireCtx is a context whose deadline passes when the test says so:
// a timeout in a known phase, without timing.
type expireCtx struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func (c *expireCtx) Done() <-chan struct{} { return c.done }

func (c *expireCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *expireCtx) expire() { c.once.Do(func() { close(c.done) }) }

// TestUpdateLogsTimeoutAndCancel: the log says an update timed out or
// was cancelled, and in which phase.
func TestUpdateLogsTimeoutAndCancel(t *testing.T) {
	var log syncbuf.Buffer
	s := startServer(t, &Server{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	d := newStallDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 3000)
	ectx := &expireCtx{Context: ctxT(t), done: make(chan struct{})}
	_, err := s.Update(ectx, "dev1", f, PullCoAP, func(p Progress) {
		if p.Phase == "uri" { // the Package URI is written
			ectx.expire()
		}
	})
	if want := "server: update dev1: timed out waiting for the download"; !errors.Is(err, context.DeadlineExceeded) || err.Error() != want {
		t.Errorf("update: %v, want %q", err, want)
	}
	<-d.uri
	ctx, cancel := context.WithCancel(ctxT(t))
	_, err = s.Update(ctx, "dev1", f, PullCoAP, func(p Progress) {
		if p.Phase == "uri" { // the Package URI is written
			cancel()
		}
	})
	if want := "server: update dev1: cancelled waiting for the download"; !errors.Is(err, context.Canceled) || err.Error() != want {
		t.Errorf("update: %v, want %q", err, want)
	}
	out := log.String()
	for _, want := range []string{`msg="firmware update timed out" ep=dev1 method=pull`, `phase="waiting for the download"`, `msg="firmware update cancelled" ep=dev1`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// TestAPITimeoutAndClientGone: a device call honours the request's
// timeout, and ends when its HTTP client goes away, long before the
// server's own RequestTimeout.
func TestAPITimeoutAndClientGone(t *testing.T) {
	s := startServer(t, &Server{RequestTimeout: time.Minute})
	d := newRawDevice(t, s.LocalAddr().String(), "mute")
	handled := make(chan struct{}, 4)
	api := s.APIHandler(APIConfig{Token: testToken})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.ServeHTTP(w, r)
		handled <- struct{}{}
	}))
	defer hs.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := apiDo(t, ctx, hs, "GET", "/api/devices/mute/read?path=/3/0&timeout=300ms", "")
	var e map[string]string
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusGatewayTimeout || e["error"] != "device mute did not answer READ /3/0 within 300ms" {
		t.Errorf("%s %v", resp.Status, e)
	}
	<-handled

	for _, c := range []struct{ method, path, body, coapPath string }{
		{"GET", "/api/devices/mute/read?path=/3/0/1", "", "3/0/1"},
		{"POST", "/api/devices/mute/execute", `{"path":"/3/0/4"}`, "3/0/4"},
	} {
		cctx, ccancel := context.WithCancel(ctx)
		go func() {
			defer ccancel()
			for { // until the request reaches the device
				m, ok := d.read(5 * time.Second)
				if p, _ := m.Options.Path(); !ok || strings.TrimPrefix(p, "/") == c.coapPath {
					return
				}
			}
		}()
		req, _ := http.NewRequestWithContext(cctx, c.method, hs.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s %s answered %s", c.method, c.path, resp.Status)
		}
		select {
		case <-handled:
		case <-ctx.Done():
			t.Fatalf("%s %s went on after its client left", c.method, c.path)
		}
	}
}

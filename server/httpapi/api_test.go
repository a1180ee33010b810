package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server"
)

func TestAPI(t *testing.T) {
	s := startServer(t, &server.Server{})
	d := startDevice(t, s, "dev1")
	hs := apiServer(t, s, Config{})
	do := func(method, path, body string) *http.Response {
		t.Helper()
		return apiDo(t, context.Background(), hs, method, path, body)
	}

	var regs []server.Registration
	json.NewDecoder(do("GET", "/api/devices", "").Body).Decode(&regs)
	if len(regs) != 1 || regs[0].Endpoint != "dev1" {
		t.Errorf("devices: %+v", regs)
	}
	var c Content
	resp := do("GET", "/api/devices/dev1/read?path=/3/0/0&format=text", "")
	json.NewDecoder(resp.Body).Decode(&c)
	if resp.StatusCode != 200 || len(c.Records) != 1 || c.Records[0].Value != "Acme" || c.Records[0].Type != "string" {
		t.Errorf("read: %s %+v", resp.Status, c)
	}
	if resp := do("POST", "/api/devices/dev1/write", `{"path":"/1/0/1","value":"300","replace":true}`); resp.StatusCode != 204 {
		t.Errorf("write: %s", resp.Status)
	}
	resp = do("GET", "/api/devices/dev1/read?path=/1/0/1&format=text", "")
	json.NewDecoder(resp.Body).Decode(&c)
	if len(c.Records) != 1 || c.Records[0].Value != "300" {
		t.Errorf("after write: %+v", c)
	}
	if resp := do("POST", "/api/devices/dev1/execute", `{"path":"/3/0/4"}`); resp.StatusCode != 204 {
		t.Errorf("execute: %s", resp.Status)
	}
	waitfor.Until(t, 5*time.Second, func() error {
		if n := d.rebootCount(); n != 1 {
			return fmt.Errorf("device rebooted %d times, want 1", n)
		}
		return nil
	})
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

	pkg := testPackage(4000)
	resp = apiUpload(t, context.Background(), hs, "ep=dev1&method=push&timeout=15s", pkg)
	sc := bufio.NewScanner(resp.Body)
	var last UpdateLine
	lines := 0
	for sc.Scan() {
		lines++
		last = UpdateLine{}
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
	}
	if len(last.Results) != 1 || last.Results[0].Result != 1 || last.Results[0].ResultName != "Success" || lines < 3 {
		t.Errorf("update: %d lines, last %+v", lines, last)
	}
}

// TestAPIRefusesForeignRequests: a web page's cross-site POST (text/plain,
// foreign Origin, no token) once rebooted a device. Each defence alone
// now refuses it, before the device hears of it.
func TestAPIRefusesForeignRequests(t *testing.T) {
	s := startServer(t, &server.Server{})
	d := startDevice(t, s, "dev1")
	hs := apiServer(t, s, Config{})
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
	if execs := d.rebootCount(); execs != 0 {
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
	s := startServer(t, &server.Server{})
	startDevice(t, s, "dev1")
	pkgDir := t.TempDir()
	hs := apiServer(t, s, Config{MaxPackageSize: 10, PackageDir: pkgDir})
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
	for _, pkg := range [][]byte{[]byte("x"), make([]byte, 11)} {
		if published(s, pkg) {
			t.Errorf("a refused request published the image of %q", pkg)
		}
	}
}

// TestAPIUpdateKeepsNoServerPath: the API takes the package in the
// request, never a path on the server's host, and keeps its copy only
// while the update runs.
func TestAPIUpdateKeepsNoServerPath(t *testing.T) {
	s := startServer(t, &server.Server{})
	d := startDevice(t, s, "dev1")
	dir := t.TempDir()
	hs := apiServer(t, s, Config{PackageDir: dir})
	pkg := testPackage(5000)
	resp := apiUpload(t, context.Background(), hs, "ep=dev1&method=pull&timeout=20s", pkg)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"result_name":"Success"`) {
		t.Fatalf("update: %s %s", resp.Status, b)
	}
	if !bytes.Equal(d.firmware(), pkg) {
		t.Error("device got another image")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("package copies left behind: %v", left)
	}
	if published(s, pkg) {
		t.Error("the package is still published after the update")
	}
}

// TestAPITimeoutAndClientGone: a device call honours the request's
// timeout, and ends when its HTTP client goes away, long before the
// server's own RequestTimeout.
func TestAPITimeoutAndClientGone(t *testing.T) {
	s := startServer(t, &server.Server{RequestTimeout: time.Minute})
	d := newMuteDevice(t, s, "mute")
	handled := make(chan struct{}, 4)
	api := Handler(s, Config{Token: testToken})
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
				select {
				case p := <-d.paths:
					if p != c.coapPath {
						continue
					}
				case <-time.After(5 * time.Second):
				}
				return
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

// TestUpdateClientGone: an update ends when its HTTP client goes away,
// and then its image is no longer served and its package copy is gone.
func TestUpdateClientGone(t *testing.T) {
	s := startServer(t, &server.Server{})
	// The device takes the Package URI and stalls in Downloading.
	d := startDevice(t, s, "dev1", func(d *device) {
		d.opened = make(chan string, 4)
		d.hold = make(chan struct{})
	})
	pkgDir := t.TempDir()
	hs := apiServer(t, s, Config{PackageDir: pkgDir})
	pkg := testPackage(3000)
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
	<-d.opened
	if left, _ := os.ReadDir(pkgDir); len(left) != 1 {
		t.Errorf("package files during the update: %v", left)
	}
	if !published(s, pkg) {
		t.Error("image not published while the device should fetch it")
	}
	cancel()
	<-done
	waitfor.Until(t, 10*time.Second, func() error {
		if published(s, pkg) {
			return errors.New("the image is still published after the client went away")
		}
		if left, _ := os.ReadDir(pkgDir); len(left) != 0 {
			return fmt.Errorf("package copy left after the client went away: %v", left)
		}
		return nil
	})
}

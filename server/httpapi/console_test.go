package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server"
)

// consoleStub stands in for package console's files (a test of the
// real files with this API is package console's).
var consoleStub = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprint(w, "<!doctype html><title>console</title>")
})

// sessionDo sends a request with a session cookie (if any) and a CSRF
// header (if any), as the console's page would, and no bearer token.
func sessionDo(t *testing.T, hs *httptest.Server, method, path, body string, cookie *http.Cookie, csrf string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	if csrf != "" {
		req.Header.Set(csrfHeader, csrf)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// signInForTest signs in with the token and returns the cookie and the
// CSRF token.
func signInForTest(t *testing.T, hs *httptest.Server, token string) (*http.Cookie, string) {
	t.Helper()
	resp := sessionDo(t, hs, "POST", "/api/session", `{"token":"`+token+`"}`, nil, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %s", resp.Status)
	}
	var body struct{ CSRF string }
	json.NewDecoder(resp.Body).Decode(&body)
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == sessionCookie {
			c = k
		}
	}
	if c == nil || body.CSRF == "" {
		t.Fatalf("sign-in set no cookie or CSRF token: %v %+v", resp.Header["Set-Cookie"], body)
	}
	return c, body.CSRF
}

func TestConsoleSession(t *testing.T) {
	s := startServer(t, &server.Server{})
	startDevice(t, s, "dev1")
	hs := apiServer(t, s, Config{Console: consoleStub})

	if resp := sessionDo(t, hs, "POST", "/api/session", `{"token":"wrong"}`, nil, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("sign-in with a wrong token: %s", resp.Status)
	}
	if resp := sessionDo(t, hs, "POST", "/api/session", `{"token":"`+testToken+`"}`, &http.Cookie{Name: "x", Value: "y"}, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("sign-in: %s", resp.Status)
	}
	req, _ := http.NewRequest("POST", hs.URL+"/api/session", strings.NewReader(`{"token":"`+testToken+`"}`))
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("sign-in as text/plain (a cross-site form): %v %v", resp.Status, err)
	}
	req, _ = http.NewRequest("POST", hs.URL+"/api/session", strings.NewReader(`{"token":"`+testToken+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin sign-in: %v %v", resp.Status, err)
	}

	if resp := sessionDo(t, hs, "POST", "/api/session", `{"token":"`+strings.Repeat("A", 64<<10)+`"}`, nil, ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("sign-in with a 64 KiB body: %s, want 400", resp.Status)
	}
	resp := sessionDo(t, hs, "POST", "/api/session", `{"token":"`+testToken+`"}`, nil, "")
	raw := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(raw, want) {
			t.Errorf("session cookie without %s: %s", want, raw)
		}
	}
	if strings.Contains(raw, testToken) || strings.Contains(raw, "Secure") {
		t.Errorf("session cookie holds the token, or is Secure over plain HTTP: %s", raw)
	}

	cookie, csrf := signInForTest(t, hs, testToken)
	if resp := sessionDo(t, hs, "GET", "/api/devices", "", cookie, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("list with the session cookie: %s", resp.Status)
	}
	var info struct{ CSRF string }
	json.NewDecoder(sessionDo(t, hs, "GET", "/api/session", "", cookie, "").Body).Decode(&info)
	if info.CSRF != csrf {
		t.Errorf("GET /api/session: csrf %q, want the sign-in's %q", info.CSRF, csrf)
	}
	// A state-changing request needs the CSRF header, not just the cookie.
	write := `{"path":"/1/0/1","value":"120","replace":true}`
	if resp := sessionDo(t, hs, "POST", "/api/devices/dev1/write", write, cookie, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("write with the cookie but no CSRF header: %s", resp.Status)
	}
	if resp := sessionDo(t, hs, "POST", "/api/devices/dev1/write", write, cookie, "not-"+csrf); resp.StatusCode != http.StatusForbidden {
		t.Errorf("write with a wrong CSRF header: %s", resp.Status)
	}
	if resp := sessionDo(t, hs, "POST", "/api/devices/dev1/write", write, cookie, csrf); resp.StatusCode != http.StatusNoContent {
		t.Errorf("write with cookie and CSRF header: %s", resp.Status)
	}
	// A cookie that names no session is no session.
	if resp := sessionDo(t, hs, "GET", "/api/devices", "", &http.Cookie{Name: sessionCookie, Value: testToken}, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("list with a made-up session cookie: %s", resp.Status)
	}

	// Sign-out needs the CSRF header too, then the cookie is worth nothing.
	if resp := sessionDo(t, hs, "DELETE", "/api/session", "", cookie, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out without CSRF header: %s", resp.Status)
	}
	resp = sessionDo(t, hs, "DELETE", "/api/session", "", cookie, csrf)
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("sign-out: %s, Set-Cookie %q", resp.Status, resp.Header.Get("Set-Cookie"))
	}
	if resp := sessionDo(t, hs, "GET", "/api/devices", "", cookie, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("list after sign-out: %s", resp.Status)
	}
	if resp := sessionDo(t, hs, "GET", "/api/session", "", cookie, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("session after sign-out: %s", resp.Status)
	}
	// The CLI's bearer token keeps working.
	if resp := apiDo(t, context.Background(), hs, "GET", "/api/devices", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("list with the bearer token: %s", resp.Status)
	}
}

// TestConsoleWithoutTokenRefused: with the console on, its page is served
// to anyone on the API's address, but every API route refuses a request
// without the token or a session.
func TestConsoleWithoutTokenRefused(t *testing.T) {
	s := startServer(t, &server.Server{})
	startDevice(t, s, "dev1")
	hs := apiServer(t, s, Config{Console: consoleStub})

	resp := sessionDo(t, hs, "GET", "/", "", nil, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") ||
		resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("console page: %s %v", resp.Status, resp.Header)
	}
	if resp := sessionDo(t, hs, "POST", "/", "{}", nil, ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST to the console's files: %s", resp.Status)
	}
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/devices"}, {"GET", "/api/devices/dev1"}, {"GET", "/api/devices/dev1/read?path=/3/0/0"},
		{"GET", "/api/devices/dev1/discover?path=/3"}, {"POST", "/api/devices/dev1/write"}, {"POST", "/api/devices/dev1/create"},
		{"POST", "/api/devices/dev1/execute"}, {"POST", "/api/devices/dev1/delete"}, {"POST", "/api/devices/dev1/attributes"},
		{"GET", "/api/devices/dev1/observe?path=/3/0/0"}, {"POST", "/api/update?ep=dev1"}, {"GET", "/api/events"},
		{"GET", "/api/status"}, {"GET", "/api/devices/dev1/status"}, {"GET", "/api/packages"}, {"POST", "/api/packages"},
		{"GET", "/api/campaigns"}, {"POST", "/api/campaigns"}, {"GET", "/api/nothing"}, {"GET", "/api/session"},
		{"DELETE", "/api/session"},
	} {
		if resp := sessionDo(t, hs, r.method, r.path, "", nil, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %s", r.method, r.path, resp.Status)
		}
	}
}

// readSSE returns the data lines of an event stream, as they come.
func readSSE(t *testing.T, body io.Reader) <-chan server.Event {
	ch := make(chan server.Event, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e server.Event
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				t.Errorf("event %q: %v", data, err)
				return
			}
			ch <- e
		}
	}()
	return ch
}

func TestEventsStream(t *testing.T) {
	s := startServer(t, &server.Server{Inventory: true})
	hs := apiServer(t, s, Config{Console: consoleStub})
	cookie, _ := signInForTest(t, hs, testToken)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/api/events", nil)
	req.AddCookie(cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	// The stream is open once its first comment arrives: the handler
	// subscribes before it writes anything.
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before it opened: %v", err)
		}
		if line == ": connected\n" {
			break
		}
	}
	events := readSSE(t, br)
	d := startDevice(t, s, "dev1")
	seen := map[string]bool{}
	for !seen["registered"] || !seen["inventory"] {
		e, ok := <-events
		if !ok {
			t.Fatalf("stream ended; saw %v", seen)
		}
		if e.Kind == "device" && e.Endpoint == "dev1" {
			seen[e.Change] = true
		}
	}
	d.Stop()
	for e := range events {
		if e.Kind == "device" && e.Endpoint == "dev1" && e.Change == "deregistered" {
			return
		}
	}
	t.Error("stream ended without the deregistration")
}

func TestDeviceStatus(t *testing.T) {
	s := startServer(t, &server.Server{Inventory: true})
	startDevice(t, s, "dev1", func(d *device) { d.fail = true })
	hs := apiServer(t, s, Config{})
	var st server.DeviceStatus
	waitfor.Until(t, 10*time.Second, func() error {
		st, _ = s.DeviceStatus("dev1")
		if st.FirmwareVersion != "1.0" || st.StateName != "Idle" || st.ResultName != "Initial" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})

	// A failed update: the status has its Result by name, the history
	// the update's steps.
	f := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(f, testPackage(3000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctxT(t), "dev1", f, server.Push, nil); err == nil {
		t.Fatal("update that the device fails succeeded")
	}
	waitfor.Until(t, 10*time.Second, func() error {
		var got DeviceStatus
		resp := apiDo(t, context.Background(), hs, "GET", "/api/devices/dev1/status", "")
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			return err
		}
		if got.Status.ResultName != "Integrity check failure" || got.Status.Phase != "" || !got.Registered {
			return fmt.Errorf("status %+v", got.Status)
		}
		var events []string
		for _, h := range got.History {
			events = append(events, h.Event)
		}
		if j := strings.Join(events, " "); !strings.HasPrefix(j, "registered firmware") {
			return fmt.Errorf("history %q", j)
		}
		return nil
	})
	var list []StatusEntry
	json.NewDecoder(apiDo(t, context.Background(), hs, "GET", "/api/status", "").Body).Decode(&list)
	if len(list) != 1 || list[0].Endpoint != "dev1" || list[0].Status.ResultName != "Integrity check failure" {
		t.Errorf("status list %+v", list)
	}
	if resp := apiDo(t, context.Background(), hs, "GET", "/api/devices/nobody/status", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("status of an unknown device: %s", resp.Status)
	}
}

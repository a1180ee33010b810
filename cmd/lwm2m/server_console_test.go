package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// TestServerConsole runs the program as users do: with default flags the
// API address serves the console's page, a sign-in with the token file's
// token gives a session cookie that reads the device list with its
// firmware version, a write needs the CSRF header, a campaign's changes
// reach the event stream, and nothing of the API answers without the
// token. -console=false serves the API alone.
func TestServerConsole(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	srv := e2eStartServer(t, bin, "-coap", "127.0.0.1:0")
	defer srv.stop()
	dev := e2eDevice(t, bin, dir, srv.coap, "console-1", "-firmware-version", "3.1.4")
	defer dev.stop()
	base := srvAPIURL(srv.api)

	get := func(path string, cookie *http.Cookie) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := get("/", nil)
	page, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<title>lwm2m server console</title>") {
		t.Fatalf("GET /: %s %.200s", resp.Status, page)
	}
	if resp := get("/api/status", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/status without a token: %s", resp.Status)
	}

	tok, err := httpapi.ReadToken(os.Getenv(srvTokenEnv))
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Post(base+"/api/session", "application/json", strings.NewReader(`{"token":"`+tok+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "lwm2m_session" {
			cookie = c
		}
	}
	if resp.StatusCode != 200 || cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("sign-in: %s, cookie %+v", resp.Status, cookie)
	}
	waitfor.Until(t, 30*time.Second, func() error {
		var list []httpapi.StatusEntry
		if err := json.NewDecoder(get("/api/status", cookie).Body).Decode(&list); err != nil {
			return err
		}
		if len(list) != 1 || list[0].Endpoint != "console-1" || list[0].Status.FirmwareVersion != "3.1.4" || list[0].Status.StateName != "Idle" {
			return fmt.Errorf("status %+v", list)
		}
		return nil
	})
	req, _ := http.NewRequest("POST", base+"/api/devices/console-1/write", strings.NewReader(`{"path":"/1/0/1","value":"120"}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(cookie)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("write with the cookie but no CSRF header: %v %v", resp.Status, err)
	}

	// The campaign engine's changes reach the console's event stream: a
	// campaign whose only device does not match its firmware version
	// runs to its end at once, without updating anything.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	req.AddCookie(cookie)
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("GET /api/events: %v %v", stream, err)
	}
	defer stream.Body.Close()
	bearer := func(method, path, ctype, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s %s: %s %v %v", method, path, resp.Status, v, err)
		}
		return v
	}
	pkg := bearer("POST", "/api/packages?name=fw", "application/octet-stream", "not really firmware")
	camp := bearer("POST", "/api/campaigns", "application/json", fmt.Sprintf(`{"name":"none","package":%q,"target":{"endpoints":"console-*","firmware_version":"0.0.0"},"deadline":%q}`,
		pkg["id"], time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	want := fmt.Sprintf(`data: {"kind":"campaign","id":%q}`, camp["id"])
	sc := bufio.NewScanner(stream.Body)
	for sc.Scan() && sc.Text() != want {
	}
	if sc.Text() != want {
		t.Errorf("no %s on the event stream: %v", want, sc.Err())
	}

	off := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-console=false")
	defer off.stop()
	if resp, err := http.Get(srvAPIURL(off.api) + "/"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET / with -console=false: %v %v", resp.Status, err)
	}
}

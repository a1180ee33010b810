package campaign_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

const testToken = "test-token"

// call sends one API request and decodes a JSON answer into out.
func call(t *testing.T, method, url, ctype, token string, body io.Reader, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, b)
		}
	}
	if resp.StatusCode >= 300 && !strings.Contains(string(b), `"error"`) {
		t.Errorf("%s %s: %d without a JSON error: %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// TestHTTPAPI drives packages and a campaign through the server's API,
// behind its token: upload, list, create, pause, resume, abort, and the
// errors of each.
func TestHTTPAPI(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", &server.MemoryStore{}, t.TempDir(), campaign.Config{MaxPackageSize: 4096})
	release := make(chan struct{})
	f := newFleet()
	f.hold = func(ep string) <-chan struct{} {
		if ep == "dev-000" {
			return release
		}
		return nil
	}
	f.startAll(t, ts.srv, 3, "1.0")
	t.Cleanup(f.stopAll)
	api := httptest.NewServer(httpapi.Handler(ts.srv, httpapi.Config{Token: testToken, Routes: ts.eng.Routes()}))
	defer api.Close()
	defer close(release)
	u := api.URL

	var pkg campaign.Package
	if code := call(t, "POST", u+"/api/packages?name=fw-1", "application/octet-stream", testToken, strings.NewReader("image"), &pkg); code != 201 {
		t.Fatalf("upload: %d", code)
	}
	if pkg.Name != "fw-1" || pkg.Size != 5 || pkg.Signature != campaign.SignatureUnsigned || len(pkg.SHA256) != 64 {
		t.Errorf("package %+v", pkg)
	}
	for _, tc := range []struct {
		what, ctype, token string
		body               io.Reader
		want               int
	}{
		{"no token", "application/octet-stream", "", strings.NewReader("x"), 401},
		{"too large", "application/octet-stream", testToken, bytes.NewReader(make([]byte, 4097)), 413},
		{"too large, chunked", "application/octet-stream", testToken, io.MultiReader(bytes.NewReader(make([]byte, 4097))), 413},
		{"empty", "application/octet-stream", testToken, strings.NewReader(""), 400},
		{"wrong type", "application/json", testToken, strings.NewReader("{}"), 415},
	} {
		if code := call(t, "POST", u+"/api/packages", tc.ctype, tc.token, tc.body, nil); code != tc.want {
			t.Errorf("upload, %s: %d, want %d", tc.what, code, tc.want)
		}
	}
	var pkgs []campaign.Package
	if call(t, "GET", u+"/api/packages", "", testToken, nil, &pkgs); len(pkgs) != 1 || pkgs[0].ID != pkg.ID {
		t.Errorf("packages %+v", pkgs)
	}

	spec := `{"name":"api","package":"` + pkg.ID + `","target":{"endpoints":"dev-*"},"method":"pull-coap",
		"rollout":{"canary":1,"wave_size":1,"concurrency":1,"failure_threshold_percent":50},"deadline":"` + time.Now().Add(time.Hour).Format(time.RFC3339) + `"}`
	heard := make(chan string, 64)
	ts.eng.Subscribe(t.Context(), func(id string) {
		select {
		case heard <- id:
		default:
		}
	})
	var c campaign.Campaign
	if code := call(t, "POST", u+"/api/campaigns", "application/json", testToken, strings.NewReader(spec), &c); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if c.State != campaign.StateRunning || len(c.Waves) != 3 || len(c.Devices) != 3 || c.Counts.Pending+c.Counts.Running != 3 {
		t.Errorf("created %+v", c)
	}
	for _, tc := range []struct {
		what, body string
		want       int
	}{
		{"bad JSON", "{", 400},
		{"unknown field", `{"name":"x","colour":"red"}`, 400},
		{"unknown package", `{"name":"x","package":"nope","deadline":"2999-01-01T00:00:00Z"}`, 404},
		{"invalid", `{"name":"","package":"` + pkg.ID + `"}`, 400},
	} {
		if code := call(t, "POST", u+"/api/campaigns", "application/json", testToken, strings.NewReader(tc.body), nil); code != tc.want {
			t.Errorf("create, %s: %d, want %d", tc.what, code, tc.want)
		}
	}
	select {
	case id := <-heard:
		if id != c.ID {
			t.Errorf("Subscribe heard of %q, want %q", id, c.ID)
		}
	case <-time.After(10 * time.Second):
		t.Error("Subscribe heard nothing of the new campaign")
	}
	// The canary is held: the campaign runs until we say.
	waitfor.Until(t, 20*time.Second, func() error {
		if f.upgrades("dev-000") != 1 {
			return errNotYet("canary not applying")
		}
		return nil
	})
	id := u + "/api/campaigns/" + c.ID
	for _, step := range []struct {
		op, state string
		want      int
	}{
		{"pause", campaign.StatePaused, 200},
		{"pause", "", 409},
		{"resume", campaign.StateRunning, 200},
		{"resume", "", 409},
		{"abort", campaign.StateAborted, 200},
		{"resume", "", 409},
		{"abort", "", 409},
	} {
		var got campaign.Campaign
		if code := call(t, "POST", id+"/"+step.op, "", testToken, nil, &got); code != step.want || (step.want == 200 && got.State != step.state) {
			t.Errorf("%s: %d %q, want %d %q", step.op, code, got.State, step.want, step.state)
		}
	}
	var got campaign.Campaign
	if call(t, "GET", id, "", testToken, nil, &got); got.State != campaign.StateAborted || got.Counts.Skipped != 2 {
		t.Errorf("after abort: %s %+v", got.State, got.Counts)
	}
	var list []campaign.Campaign
	if call(t, "GET", u+"/api/campaigns", "", testToken, nil, &list); len(list) != 1 || list[0].ID != c.ID {
		t.Errorf("list %+v", list)
	}
	if code := call(t, "GET", u+"/api/campaigns/nope", "", testToken, nil, nil); code != 404 {
		t.Errorf("unknown campaign: %d", code)
	}
	if code := call(t, "GET", u+"/api/campaigns", "", "", nil, nil); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code := call(t, "DELETE", id, "", testToken, nil, nil); code != 405 && code != 404 {
		t.Errorf("DELETE: %d", code)
	}
}

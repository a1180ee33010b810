package console_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lwm2m-fota/lwm2m/server/campaign"
	"github.com/lwm2m-fota/lwm2m/server/console"
)

// contractAPI plays the campaign engine's routes as Contract B defines
// them, with the engine's own JSON types (package server/campaign), and
// the session and event routes of package server, so that the packages
// and campaigns pages are tested on states a short test of the real
// engine does not reach (a campaign under way, paused, aborted).
// TestConsoleCampaign runs the same pages against the real engine.
type contractAPI struct {
	t      *testing.T
	mu     sync.Mutex
	pkgs   []campaign.Package
	camp   *campaign.Campaign // the one campaign, nil until created
	posted map[string]any     // the body of POST /api/campaigns
	calls  []string           // the campaign actions called
	events chan string        // campaign IDs to announce on /api/events
}

const contractCSRF = "csrf-of-the-session"

func (c *contractAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/api/") {
		console.Handler().ServeHTTP(w, r)
		return
	}
	if r.Method != "GET" && r.Header.Get("X-CSRF-Token") != contractCSRF {
		c.t.Errorf("%s %s without the CSRF header", r.Method, r.URL.Path)
		http.Error(w, `{"error":"csrf"}`, http.StatusForbidden)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	switch p := r.URL.Path; {
	case p == "/api/session":
		reply(map[string]string{"csrf": contractCSRF})
	case p == "/api/status":
		reply([]any{})
	case p == "/api/events":
		c.mu.Unlock()
		defer c.mu.Lock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": connected\n\n")
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case id := <-c.events:
				fmt.Fprintf(w, "data: {\"kind\":\"campaign\",\"id\":%q}\n\n", id)
				w.(http.Flusher).Flush()
			}
		}
	case p == "/api/packages" && r.Method == "GET":
		reply(c.pkgs)
	case p == "/api/packages" && r.Method == "POST":
		if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
			c.t.Errorf("package upload as %q", ct)
		}
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		pkg := campaign.Package{ID: "p1", Name: r.URL.Query().Get("name"), Version: "2.0.0", Size: int64(len(b)),
			SHA256: hex.EncodeToString(sum[:]), Signature: campaign.SignatureValid, Format: "fwpkg", Created: time.Now().UTC()}
		c.pkgs = append(c.pkgs, pkg)
		w.WriteHeader(http.StatusCreated)
		reply(pkg)
	case p == "/api/campaigns" && r.Method == "GET":
		if c.camp == nil {
			reply([]any{})
			return
		}
		reply([]campaign.Campaign{*c.camp})
	case p == "/api/campaigns" && r.Method == "POST":
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &c.posted)
		// The engine takes nothing it does not know.
		var spec campaign.Spec
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			c.t.Errorf("POST /api/campaigns: %v", err)
		}
		now := time.Now().UTC()
		c.camp = &campaign.Campaign{ID: "c1", Name: spec.Name, Package: spec.Package, Target: spec.Target, Method: spec.Method,
			Rollout: spec.Rollout, State: campaign.StateRunning, Created: now, Deadline: spec.Deadline,
			Waves: []campaign.Wave{{Index: 0, Devices: 1, State: "running", Canary: true}, {Index: 1, Devices: 3, State: "pending"}},
			Devices: []campaign.Device{
				{Endpoint: "camp-0", Wave: 0, Status: campaign.DeviceRunning, Phase: "deliver", State: "Downloading", ResultName: "Initial", Bytes: 2048, Total: 5000, Updated: now},
				{Endpoint: "camp-1", Wave: 1, Status: campaign.DevicePending, Updated: now},
				{Endpoint: "camp-2", Wave: 1, Status: campaign.DevicePending, Updated: now},
				{Endpoint: "camp-3", Wave: 1, Status: campaign.DevicePending, Updated: now}},
			Counts: campaign.Counts{Pending: 3, Running: 1}}
		w.WriteHeader(http.StatusCreated)
		reply(c.camp)
	case p == "/api/campaigns/c1" && c.camp != nil:
		reply(c.camp)
	case strings.HasPrefix(p, "/api/campaigns/c1/") && r.Method == "POST" && c.camp != nil:
		action := strings.TrimPrefix(p, "/api/campaigns/c1/")
		c.calls = append(c.calls, action)
		c.camp.State = map[string]string{"pause": campaign.StatePaused, "resume": campaign.StateRunning, "abort": campaign.StateAborted}[action]
		reply(c.camp)
	default:
		w.WriteHeader(http.StatusNotFound)
		reply(map[string]string{"error": "no API endpoint " + r.Method + " " + p})
	}
}

// TestCampaignPagesAgainstContractB drives the packages and campaigns
// pages against Contract B's routes: an upload streams the file with the
// CSRF header, the form posts the campaign as the contract says, the
// campaign's page follows its changes live (waves, counts, each device's
// Result by name) and its buttons pause, resume and abort.
func TestCampaignPagesAgainstContractB(t *testing.T) {
	fake := &contractAPI{t: t, events: make(chan string, 4)}
	hs := httptest.NewServer(fake)
	defer hs.Close()
	defer hs.CloseClientConnections()
	ctx := browser(t)
	run(t, ctx, "open the console", chromedp.Navigate(hs.URL+"/#/packages"), chromedp.WaitVisible("#pkg-upload"))

	pkg := writePackage(t, 5000)
	run(t, ctx, "upload", chromedp.SetUploadFiles("#pkg-file", []string{pkg}), chromedp.SendKeys("#pkg-name", "sensor-fw"),
		chromedp.Click("#pkg-upload button"))
	b, _ := os.ReadFile(pkg)
	sum := sha256.Sum256(b)
	waitJS(t, ctx, "package listed with its signature", `(() => { const r = document.querySelector('#packages tr[data-id="p1"]'); return r && r.textContent.includes("sensor-fw") && r.textContent.includes("valid"); })()`)
	waitJS(t, ctx, "upload's answer shown", fmt.Sprintf(`document.querySelector("#pkg-msg").textContent.includes(%q)`, hex.EncodeToString(sum[:])))
	screenshot(t, ctx, "packages")
	if fake.pkgs[0].Size != 5000 {
		t.Errorf("uploaded %v bytes, want 5000", fake.pkgs[0].Size)
	}

	run(t, ctx, "new campaign", chromedp.Click(`#nav a[data-view="campaigns"]`), chromedp.WaitVisible("#camp-form"))
	waitJS(t, ctx, "package offered", `document.querySelector("#camp-package").value === "p1"`)
	run(t, ctx, "create",
		chromedp.SendKeys("#camp-name", "spring rollout"),
		chromedp.SetValue("#camp-endpoints", "camp-*"),
		chromedp.SetValue("#camp-fwversion", "1.0.0"),
		chromedp.SetValue("#camp-method", "push"),
		chromedp.SetValue("#camp-canary", "1"),
		chromedp.SetValue("#camp-wave", "3"),
		chromedp.SetValue("#camp-concurrency", "2"),
		chromedp.SetValue("#camp-failure", "5"),
		chromedp.Click("#camp-form button"), chromedp.WaitVisible("#campaign"))
	fake.mu.Lock()
	// The form's deadline defaults to a day ahead (the engine wants one).
	deadline, err := time.Parse(time.RFC3339, fmt.Sprint(fake.posted["deadline"]))
	if err != nil || deadline.Before(time.Now().Add(23*time.Hour)) {
		t.Errorf("deadline %v (%v), want about a day from now", fake.posted["deadline"], err)
	}
	delete(fake.posted, "deadline")
	posted, _ := json.Marshal(fake.posted)
	fake.mu.Unlock()
	want := `{"method":"push","name":"spring rollout","package":"p1","rollout":{"canary":1,"concurrency":2,"failure_threshold_percent":5,"wave_percent":0,"wave_size":3},"target":{"endpoints":"camp-*","firmware_version":"1.0.0"}}`
	if string(posted) != want {
		t.Errorf("POST /api/campaigns body\n%s\nwant\n%s", posted, want)
	}
	waitJS(t, ctx, "package by name", `document.querySelector("#campaign-package").textContent === "sensor-fw 2.0.0"`)
	waitJS(t, ctx, "running, with its waves", `document.querySelector("#campaign .c-state").textContent === "running" && document.querySelectorAll("#campaign-waves progress").length === 2 && document.querySelector('#campaign-waves [data-wave="0"]').textContent.startsWith("Canary")`)
	waitJS(t, ctx, "target and rollout", `document.querySelector("#campaign").textContent.includes("endpoints camp-*, firmware version 1.0.0") && document.querySelector("#campaign").textContent.includes("canary 1, waves of 3, at most 2 at once, pause above 5 % failed")`)
	waitJS(t, ctx, "a device's download", `(() => { const r = document.querySelector('#campaign-devices tr[data-endpoint="camp-0"]'); return r && r.querySelector(".c-status").textContent === "running" && r.textContent.includes("2.0 KiB of 4.9 KiB") && r.querySelector(".fw-state").textContent === "Downloading"; })()`)

	// The engine moves on: the page follows through the event stream.
	fake.mu.Lock()
	now := time.Now().UTC()
	fake.camp.Waves = []campaign.Wave{{Index: 0, Devices: 1, Done: 1, State: "done", Canary: true},
		{Index: 1, Devices: 3, Done: 1, Failed: 1, State: "running"}}
	fake.camp.Devices = []campaign.Device{
		{Endpoint: "camp-0", Wave: 0, Status: campaign.DeviceSucceeded, Phase: "done", State: "Idle", Result: 1, ResultName: "Success", Bytes: 5000, Updated: now},
		{Endpoint: "camp-1", Wave: 1, Status: campaign.DeviceSucceeded, Phase: "done", State: "Idle", Result: 1, ResultName: "Success", Bytes: 5000, Updated: now},
		{Endpoint: "camp-2", Wave: 1, Status: campaign.DeviceFailed, Phase: "done", State: "Downloaded", Result: 8, ResultName: "Firmware update failed", Bytes: 5000, Error: "update failed", Updated: now},
		{Endpoint: "camp-3", Wave: 1, Status: campaign.DeviceRunning, Phase: "deliver", State: "Downloading", ResultName: "Initial", Bytes: 1024, Updated: now}}
	fake.camp.Counts = campaign.Counts{Succeeded: 2, Failed: 1, Running: 1}
	fake.mu.Unlock()
	fake.events <- "c1"
	waitJS(t, ctx, "counts by result, live", `document.querySelector("#campaign .c-succeeded").textContent === "succeeded 2" && document.querySelector("#campaign .c-failed").textContent === "failed 1"`)
	waitJS(t, ctx, "failed device's Result by name", `document.querySelector('#campaign-devices tr[data-endpoint="camp-2"] .fw-result').textContent === "Firmware update failed" && document.querySelector('#campaign-devices tr[data-endpoint="camp-2"]').textContent.includes("Downloaded")`)
	waitJS(t, ctx, "wave progress", `(() => { const p = document.querySelector('#campaign-waves [data-wave="1"] progress'); return p && p.value === 2 && p.max === 3; })()`)
	screenshot(t, ctx, "campaign")

	run(t, ctx, "pause", chromedp.Click("#camp-pause"))
	waitJS(t, ctx, "paused", `document.querySelector("#campaign .c-state").textContent === "paused" && !document.querySelector("#camp-resume").disabled`)
	run(t, ctx, "resume", chromedp.Click("#camp-resume"))
	waitJS(t, ctx, "running again", `document.querySelector("#campaign .c-state").textContent === "running"`)
	run(t, ctx, "abort", chromedp.Click("#camp-abort"))
	waitJS(t, ctx, "aborted", `document.querySelector("#campaign .c-state").textContent === "aborted" && document.querySelector("#camp-abort").disabled`)
	fake.mu.Lock()
	calls := strings.Join(fake.calls, " ")
	fake.mu.Unlock()
	if calls != "pause resume abort" {
		t.Errorf("campaign actions %q", calls)
	}
	run(t, ctx, "campaign list", chromedp.Click(`//a[text()="← Campaigns"]`), chromedp.WaitVisible("#campaigns"))
	waitJS(t, ctx, "listed", `document.querySelector('#campaigns tr[data-id="c1"]').textContent.includes("spring rollout")`)
}

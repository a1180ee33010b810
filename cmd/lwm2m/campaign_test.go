package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/server/campaign"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// campaignCLI runs "lwm2m server campaign ARGS" with the built program
// against api and returns its exit status and output.
func campaignCLI(t *testing.T, bin, api string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"server", "campaign", args[0], "-api", api}, args[1:]...)
	cmd := exec.CommandContext(ctx, bin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("lwm2m server campaign %s: %v", args[0], err)
	}
	return code, out.String(), errb.String()
}

// TestServerCampaignCLI runs "lwm2m server" and three "lwm2m client"
// processes, and drives a campaign with the program's campaign commands:
// create (uploading the package), pause, resume, show -wait until every
// device runs the new version, list, and abort of a second campaign,
// with the exit status of each, including refusals and usage errors.
func TestServerCampaignCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs server and device processes")
	}
	bin := e2eBuild(t)
	dir := t.TempDir()
	payload := make([]byte, 4<<10)
	rand.Read(payload)
	image := filepath.Join(dir, "firmware.img")
	if err := os.WriteFile(image, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "fw-2.0.pkg")
	e2ePack(t, image, pkg, "2.0", "")

	db := filepath.Join(dir, "server.db")
	srv := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-db", db)
	api := srv.api
	var devs []*e2eProc
	var eps []string
	for i := range 3 {
		eps = append(eps, e2eEP(i))
		devs = append(devs, e2eDevice(t, bin, filepath.Join(dir, "devices"), srv.coap, e2eEP(i)))
	}
	t.Cleanup(func() { e2eStopAll(devs) })
	e2eWaitRegistered(t, api, nil, eps...)

	// Usage errors: exit 2, nothing created.
	for _, args := range [][]string{
		{"create", "-package", pkg},
		{"create", "-name", "x", "-package", pkg, "-deadline", "yesterday"},
		{"create", "-name", "x", "-package", pkg, "-concurrency", "0"},
		{"create", "-name", "x", "-package", pkg, "-method", "pull-ftp"},
		{"show"},
		{"pause", "a", "b"},
		{"frobnicate"},
	} {
		if code, _, errs := campaignCLI(t, bin, api, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, code, errs)
		}
	}
	// Nothing uploaded either: a usage error is found before the upload.
	if pkgs := e2ePackages(t, api); len(pkgs) != 0 {
		t.Errorf("usage errors left %d packages on the server, want none", len(pkgs))
	}
	// Refused by the server: exit 1.
	if code, _, errs := campaignCLI(t, bin, api, "create", "-name", "x", "-package", "no-such-id"); code != 1 || !strings.Contains(errs, "no such package") {
		t.Errorf("create with an unknown package: exit %d, want 1: %s", code, errs)
	}
	if code, _, errs := campaignCLI(t, bin, api, "show", "nope"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("show of an unknown campaign: exit %d, want 1: %s", code, errs)
	}

	code, out, errs := campaignCLI(t, bin, api, "create", "-name", "to 2.0", "-package", pkg, "-match", "dev-*",
		"-firmware-version", "1.0", "-canary", "1", "-wave-size", "2", "-concurrency", "2", "-deadline", "1h")
	if code != 0 {
		t.Fatalf("create: exit %d\n%s\n%s", code, out, errs)
	}
	e2eWant(t, "create", out, "uploaded: e2e-firmware 2.0", "signature unsigned", `"to 2.0": running`, "3 devices", "0 (canary)")
	id := regexp.MustCompile(`campaign ([0-9a-f]+) `).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no campaign ID in:\n%s", out)
	}
	if code, out, errs = campaignCLI(t, bin, api, "pause", id[1]); code != 0 || !strings.Contains(out, ": paused (paused by the operator)") {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs = campaignCLI(t, bin, api, "pause", id[1]); code != 1 || !strings.Contains(errs, "is paused") {
		t.Errorf("pause of a paused campaign: exit %d, want 1: %s", code, errs)
	}
	if code, out, errs = campaignCLI(t, bin, api, "resume", id[1]); code != 0 || !strings.Contains(out, ": running") {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = campaignCLI(t, bin, api, "show", "-wait", id[1])
	if code != 0 {
		t.Fatalf("show -wait: exit %d\n%s%s", code, out, errs)
	}
	e2eWant(t, "show", out, ": done", "3 succeeded, 0 failed", "ENDPOINT", "dev-00", "1 Success", "WAVE")
	for _, ep := range eps {
		e2eWant(t, "firmware of "+ep, e2eRead(t, api, ep, "/3/0/3"), "= 2.0")
	}
	out = e2eMustList(t, bin, api)
	e2eWant(t, "list", out, "ID", "NAME", "STATE", id[1], "to 2.0", "done")

	// The devices run 2.0 now: a campaign for 1.0 skips them all.
	code, out, errs = campaignCLI(t, bin, api, "create", "-name", "again", "-package", pkg, "-firmware-version", "1.0", "-canary", "1")
	if code != 0 {
		t.Fatalf("second create: exit %d\n%s%s", code, out, errs)
	}
	id2 := regexp.MustCompile(`campaign ([0-9a-f]+) `).FindStringSubmatch(out)[1]
	code, out, _ = campaignCLI(t, bin, api, "abort", id2)
	if code == 0 {
		e2eWant(t, "abort", out, ": aborted")
	} else {
		// It may have finished first: then abort is refused.
		code, out, _ = campaignCLI(t, bin, api, "show", id2)
		e2eWant(t, "show after a refused abort", out, ": done", "3 skipped")
	}
	if code, _, errs = campaignCLI(t, bin, api, "abort", id2); code != 1 {
		t.Errorf("abort of an ended campaign: exit %d, want 1: %s", code, errs)
	}
	// Aborted, or done with every device skipped: not a failure only
	// when done.
	code, out, _ = campaignCLI(t, bin, api, "show", "-wait", id2)
	if aborted := strings.Contains(out, ": aborted"); aborted != (code == 1) {
		t.Errorf("show -wait: exit %d for\n%s", code, out)
	}
}

func e2eMustList(t *testing.T, bin, api string) string {
	t.Helper()
	code, out, errs := campaignCLI(t, bin, api, "list")
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errs)
	}
	return out
}

// e2ePackages lists the server's uploaded packages (GET /api/packages).
func e2ePackages(t *testing.T, api string) []campaign.Package {
	t.Helper()
	tok, err := httpapi.ReadToken(srvDefaultTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", api+"/api/packages", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var pkgs []campaign.Package
	if err := json.NewDecoder(resp.Body).Decode(&pkgs); err != nil {
		t.Fatalf("GET /api/packages: %v", err)
	}
	return pkgs
}

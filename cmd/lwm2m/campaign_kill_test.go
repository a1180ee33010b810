package main

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/server/campaign"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// A campaign survives SIGKILL of the server at several instants: just
// after it was created (its first device may be starting), a moment later
// (a device downloading), and later still. Restarted on the same store,
// the server finishes the campaign, and no device downloads or applies
// the package twice: the campaign writes a device's start before it
// begins, and after a crash checks such a device rather than updating it
// again.
func TestServerCampaignSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs server and device processes")
	}
	bin := e2eBuild(t)
	dir := t.TempDir()
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	image := filepath.Join(dir, "firmware.img")
	if err := os.WriteFile(image, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "fw-2.0.pkg")
	e2ePack(t, image, pkg, "2.0", "")

	db := filepath.Join(dir, "server.db")
	srv := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-db", db)
	coap := srv.coap
	var devs []*e2eProc
	var eps []string
	for i := range 3 {
		eps = append(eps, e2eEP(i))
		devs = append(devs, e2eDevice(t, bin, filepath.Join(dir, "devices"), coap, e2eEP(i)))
	}
	t.Cleanup(func() { e2eStopAll(devs) })
	e2eWaitRegistered(t, srv.api, nil, eps...)

	code, out, errs := campaignCLI(t, bin, srv.api, "create", "-name", "killed", "-package", pkg, "-match", "dev-*",
		"-canary", "1", "-wave-size", "1", "-concurrency", "1", "-deadline", "1h")
	if code != 0 {
		t.Fatalf("create: exit %d\n%s\n%s", code, out, errs)
	}
	id := regexp.MustCompile(`campaign ([0-9a-f]+) `).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no campaign ID in:\n%s", out)
	}
	for _, after := range []time.Duration{0, 150 * time.Millisecond, 600 * time.Millisecond} {
		time.Sleep(after) // the kill point, not a synchronisation
		if err := srv.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-srv.done
		srv = e2eStartServer(t, bin, "-coap", coap, "-db", db)
	}
	code, out, errs = campaignCLI(t, bin, srv.api, "show", "-wait", id[1])
	if code != 0 {
		t.Fatalf("show -wait after the kills: exit %d\n%s%s", code, out, errs)
	}
	e2eWant(t, "show", out, ": done", "3 succeeded, 0 failed")
	// A start the kill cut short before anything reached the device is
	// retried (an attempt more); what the device downloaded and applied,
	// it did once.
	for i, d := range devs {
		if n := strings.Count(d.log.String(), "download: 64.1 KiB of 64.1 KiB (100%)"); n != 1 {
			t.Errorf("%s downloaded the package %d times, want 1:\n%s", eps[i], n, d.log.String())
		}
	}
	c := e2eCampaign(t, srv.api, id[1])
	for _, d := range c.Devices {
		if d.Status != campaign.DeviceSucceeded || d.Attempts > 2 {
			t.Errorf("%s: %s after %d attempts", d.Endpoint, d.Status, d.Attempts)
		}
	}
	for _, ep := range eps {
		e2eWant(t, "firmware of "+ep, e2eRead(t, srv.api, ep, "/3/0/3"), "= 2.0")
	}
}

// e2eCampaign reads campaign id through the API.
func e2eCampaign(t *testing.T, api, id string) campaign.Campaign {
	t.Helper()
	tok, err := httpapi.ReadToken(srvDefaultTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", api+"/api/campaigns/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c campaign.Campaign
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

package campaign_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
)

// TestRestartResumesWithoutUpdatingTwice stops the server and its engine
// in the middle of a campaign, while five devices are applying the
// package (State Updating) and one holds the whole package unverified
// (Downloading), and starts them again on the same store and ports: the
// engine verifies those six by reading their state instead of updating
// them again, executes Update on the one that reaches Downloaded, records
// their success once they report it, and updates the rest. Every device
// applies the package exactly once.
func TestRestartResumesWithoutUpdatingTwice(t *testing.T) {
	const n = 40
	dir := t.TempDir()
	dbFile, pkgDir := filepath.Join(dir, "reg.db"), filepath.Join(dir, "packages")
	coapAddr, imgAddr := freeUDP(t), freeUDP(t)
	store, err := server.OpenBoltStore(dbFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := campaign.Config{DeviceTimeout: time.Minute}
	ts := startServer(t, coapAddr, imgAddr, store, pkgDir, cfg)

	release := make(chan struct{})
	held := map[string]bool{"dev-020": true, "dev-021": true, "dev-022": true, "dev-023": true, "dev-024": true}
	f := newFleet()
	f.hold = func(ep string) <-chan struct{} {
		if held[ep] {
			return release
		}
		return nil
	}
	f.holdFinish = func(ep string) <-chan struct{} {
		if ep == "dev-019" {
			return release
		}
		return nil
	}
	f.startAll(t, ts.srv, n, "1.0")
	pkg := addPackage(t, ts.eng)
	c, err := ts.eng.Create(campaign.Spec{
		Name: "restart", Package: pkg.ID, Target: campaign.Target{Endpoints: "dev-*"},
		Rollout:  campaign.Rollout{Concurrency: 6},
		Deadline: time.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The six held devices fill the six slots: nothing else runs.
	waitfor.Until(t, 60*time.Second, func() error {
		for ep := range held {
			if f.upgrades(ep) != 1 {
				return errNotYet(ep + " is not applying the package")
			}
		}
		if f.finishes("dev-019") != 1 {
			return errNotYet("dev-019 is not checking the package")
		}
		return nil
	})
	ts.stop()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	store, err = server.OpenBoltStore(dbFile)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ts = startServer(t, coapAddr, imgAddr, store, pkgDir, cfg)
	t.Cleanup(f.stopAll) // before the server stops: they de-register
	got, err := ts.eng.Campaign(c.ID)
	if err != nil {
		t.Fatalf("the campaign did not survive the restart: %v", err)
	}
	for _, d := range got.Devices {
		if (held[d.Endpoint] || d.Endpoint == "dev-019") && d.Status != campaign.DeviceRunning {
			t.Errorf("after the restart %s is %s, want running (being verified)", d.Endpoint, d.Status)
		}
	}
	if len(ts.eng.Packages()) != 1 {
		t.Errorf("packages after the restart: %+v", ts.eng.Packages())
	}
	close(release)

	got = waitState(t, ts.eng, c.ID, 60*time.Second, campaign.StateDone)
	if got.Counts.Succeeded != n {
		t.Fatalf("counts %+v, want all %d succeeded", got.Counts, n)
	}
	for _, d := range got.Devices {
		if u := f.upgrades(d.Endpoint); u != 1 {
			t.Errorf("%s applied the package %d times, want once", d.Endpoint, u)
		}
		if d.Attempts != 1 {
			t.Errorf("%s: %d updates started, want 1", d.Endpoint, d.Attempts)
		}
	}
}

type errNotYet string

func (e errNotYet) Error() string { return string(e) }

// TestVerifyAfterCrash loads a campaign whose four devices were marked
// running when the server went down, and has them report what a crash
// may leave: the update never reached one (Idle, Initial), which is then
// updated; one failed (Result 5); one reports Success but not the
// package's version; one runs the package's version with Success. Only
// the first is updated.
func TestVerifyAfterCrash(t *testing.T) {
	dir := t.TempDir()
	store := &server.MemoryStore{}
	first, err := campaign.New(campaign.Config{Server: &server.Server{}, Store: store, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	img := strings.NewReader("firmware 2.0")
	if _, err := fwpkg.Pack(&b, img, img.Size(), "fw", "2.0", nil); err != nil {
		t.Fatal(err)
	}
	pkg, err := first.AddPackage("", &b)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	recs := map[string][]byte{
		"c1": []byte(`{"id":"c1","name":"crash","package":"` + pkg.ID + `","method":"pull-coap","state":"running",
			"rollout":{"concurrency":10,"failure_threshold_percent":100},"created":"` + now + `",
			"deadline":"2999-01-01T00:00:00Z","waves":[{"index":0,"devices":4}]}`),
	}
	for i := range 4 {
		ep := fmt.Sprintf("dev-%03d", i)
		recs["c1/d/"+ep] = []byte(`{"endpoint":"` + ep + `","wave":0,"status":"running","phase":"uri","result":-1,"started":"` + now + `","attempts":1}`)
	}
	if err := store.PutRecords("campaigns", recs); err != nil {
		t.Fatal(err)
	}

	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", store, dir, campaign.Config{})
	f := newFleet()
	f.initial = map[string]*fwupdate.Persisted{
		"dev-001": {State: fwupdate.StateIdle, Result: fwupdate.ResultIntegrity},
		"dev-002": {State: fwupdate.StateIdle, Result: fwupdate.ResultSuccess},
		"dev-003": {State: fwupdate.StateIdle, Result: fwupdate.ResultSuccess},
	}
	for i, fw := range []string{"1.0", "1.0", "1.0", "2.0"} {
		f.start(t, ts.srv, fmt.Sprintf("dev-%03d", i), fw)
	}
	t.Cleanup(f.stopAll)
	c := waitState(t, ts.eng, "c1", 30*time.Second, campaign.StateDone)
	want := []struct {
		status   string
		result   int
		attempts int
		upgrades int
	}{
		{campaign.DeviceSucceeded, 1, 2, 1},
		{campaign.DeviceFailed, 5, 1, 0},
		{campaign.DeviceFailed, 1, 1, 0},
		{campaign.DeviceSucceeded, 1, 1, 0},
	}
	for i, d := range c.Devices {
		w := want[i]
		if d.Status != w.status || d.Result != w.result || d.Attempts != w.attempts || f.upgrades(d.Endpoint) != w.upgrades {
			t.Errorf("%s: %s result %d, %d attempts, %d updates applied (%s); want %+v", d.Endpoint, d.Status, d.Result, d.Attempts, f.upgrades(d.Endpoint), d.Error, w)
		}
	}
	if e := c.Devices[2].Error; !strings.Contains(e, `firmware version "1.0", the package's is "2.0"`) {
		t.Errorf("dev-002: %s", e)
	}
}

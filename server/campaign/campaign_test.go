package campaign_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
)

// TestFleetCampaign runs a campaign over 200 devices: a canary group of
// 10, then waves of 50, at most 20 at once. Ten devices of the third wave
// fail verification on purpose: 20 % of the wave, over the 10 %
// threshold, so the campaign pauses with the later waves untouched; once
// resumed it finishes, each device updated once, the failed ones with
// their Result by name.
func TestFleetCampaign(t *testing.T) {
	const n = 200
	store, err := server.OpenBoltStore(filepath.Join(t.TempDir(), "reg.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", store, t.TempDir(), campaign.Config{DeviceTimeout: time.Minute})
	f := newFleet()
	f.fail = func(ep string) bool { return ep >= "dev-100" && ep < "dev-110" }
	f.startAll(t, ts.srv, n, "1.0")
	t.Cleanup(f.stopAll)
	pkg := addPackage(t, ts.eng)
	c, err := ts.eng.Create(campaign.Spec{
		Name: "fleet", Package: pkg.ID, Target: campaign.Target{Endpoints: "dev-*"}, Method: campaign.MethodPullCoAP,
		Rollout:  campaign.Rollout{Canary: 10, WaveSize: 50, Concurrency: 20, FailureThresholdPercent: ptr(10.0)},
		Deadline: time.Now().Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Waves) != 5 || c.Waves[0].Devices != 10 || !c.Waves[0].Canary || c.Waves[4].Devices != 40 {
		t.Fatalf("waves %+v, want 10, 50, 50, 50, 40", c.Waves)
	}

	c = waitState(t, ts.eng, c.ID, 90*time.Second, campaign.StatePaused)
	t.Logf("paused: %s; %+v", c.PauseReason, c.Counts)
	// It pauses as soon as more than 5 of the wave's 50 failed; the
	// updates under way go on to their outcome.
	if c.PauseReason == "" || c.Waves[2].Failed <= 5 || c.Counts.Failed != c.Waves[2].Failed {
		t.Fatalf("pause reason %q, wave 2 %+v, counts %+v; want a pause for wave 2 with more than 5 failed", c.PauseReason, c.Waves[2], c.Counts)
	}
	for _, d := range c.Devices {
		if d.Wave >= 3 && d.Status != campaign.DevicePending {
			t.Fatalf("%s of wave %d is %s while wave 2 crossed the threshold", d.Endpoint, d.Wave, d.Status)
		}
	}
	if _, err := ts.eng.Resume(c.ID); err != nil {
		t.Fatal(err)
	}
	c = waitState(t, ts.eng, c.ID, 90*time.Second, campaign.StateDone)
	if c.Counts.Succeeded != n-10 || c.Counts.Failed != 10 || c.Counts.Pending != 0 {
		t.Fatalf("counts %+v, want %d succeeded and 10 failed", c.Counts, n-10)
	}
	for _, d := range c.Devices {
		want := 1
		if f.fail(d.Endpoint) {
			want = 0
			if d.Status != campaign.DeviceFailed || d.Result != 5 || d.ResultName != "Integrity check failure" {
				t.Errorf("%s: %s, result %d %q; want failed with 5 Integrity check failure", d.Endpoint, d.Status, d.Result, d.ResultName)
			}
		} else if d.Status != campaign.DeviceSucceeded || d.Result != 1 || d.ResultName != "Success" {
			t.Errorf("%s: %s, result %d %q, want succeeded", d.Endpoint, d.Status, d.Result, d.ResultName)
		}
		if got := f.upgrades(d.Endpoint); got != want {
			t.Errorf("%s applied %d updates, want %d", d.Endpoint, got, want)
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.most > 20 || f.most == 0 {
		t.Errorf("%d updates ran at once, want 1 to 20 (the concurrency limit)", f.most)
	}
	t.Logf("at most %d updates at once", f.most)
	// Each wave ends before the next starts: the canary group first.
	byWave := map[int][]string{}
	for _, d := range c.Devices {
		byWave[d.Wave] = append(byWave[d.Wave], d.Endpoint)
	}
	for w := 1; w < len(c.Waves); w++ {
		lastEnd, firstStart := 0, int(^uint(0)>>1)
		for _, ep := range byWave[w-1] {
			lastEnd = max(lastEnd, f.ends[ep])
		}
		for _, ep := range byWave[w] {
			firstStart = min(firstStart, f.starts[ep])
		}
		if lastEnd > firstStart {
			t.Errorf("wave %d started (event %d) before wave %d ended (event %d)", w, firstStart, w-1, lastEnd)
		}
	}
}

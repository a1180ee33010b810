package campaign_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
)

// TestOfflineDevicesWaitUntilDeadline has two devices leave before their
// wave comes: one registers again and is updated then; the other never
// comes back and expires at the deadline, which ends the campaign.
func TestOfflineDevicesWaitUntilDeadline(t *testing.T) {
	t.Parallel() // it mostly waits for its deadline
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", &server.MemoryStore{}, t.TempDir(), campaign.Config{})
	release := make(chan struct{})
	f := newFleet()
	f.hold = func(ep string) <-chan struct{} {
		if ep == "dev-000" {
			return release // the canary holds the next wave back
		}
		return nil
	}
	f.startAll(t, ts.srv, 3, "1.0")
	t.Cleanup(f.stopAll)
	pkg := addPackage(t, ts.eng)
	// Long enough for the steps before it even when server.Update misses
	// a notification and waits for its 3 s poll.
	deadline := time.Now().Add(8 * time.Second)
	c, err := ts.eng.Create(campaign.Spec{Name: "offline", Package: pkg.ID, Rollout: campaign.Rollout{Canary: 1}, Deadline: deadline})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 20*time.Second, func() error {
		if f.upgrades("dev-000") != 1 {
			return errNotYet("canary not applying")
		}
		return nil
	})
	f.devs["dev-001"].Stop() // de-registers
	f.devs["dev-002"].Stop()
	close(release)
	waitfor.Until(t, 20*time.Second, func() error {
		c, _ = ts.eng.Campaign(c.ID)
		for _, d := range c.Devices[1:] {
			if d.Status != campaign.DeviceWaiting {
				return fmt.Errorf("%s is %s, want waiting", d.Endpoint, d.Status)
			}
		}
		return nil
	})
	f.start(t, ts.srv, "dev-001", "1.0") // back
	c = waitState(t, ts.eng, c.ID, 30*time.Second, campaign.StateDone)
	want := map[string]string{"dev-000": campaign.DeviceSucceeded, "dev-001": campaign.DeviceSucceeded, "dev-002": campaign.DeviceExpired}
	for _, d := range c.Devices {
		if d.Status != want[d.Endpoint] {
			t.Errorf("%s is %s, want %s (%s)", d.Endpoint, d.Status, want[d.Endpoint], d.Error)
		}
	}
	if c.Finished.Before(deadline) {
		t.Errorf("finished at %v, before the deadline %v, with a device waiting", c.Finished, deadline)
	}
	if c.Counts.Expired != 1 || c.Counts.Succeeded != 2 {
		t.Errorf("counts %+v", c.Counts)
	}
}

// TestTargetAndPush updates by push only the devices whose firmware
// version and manufacturer match; the others are skipped untouched.
func TestTargetAndPush(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", &server.MemoryStore{}, t.TempDir(), campaign.Config{})
	f := newFleet()
	for i, fw := range []string{"0.9", "1.0", "0.9", "1.0"} {
		f.start(t, ts.srv, fmt.Sprintf("dev-%03d", i), fw)
	}
	t.Cleanup(f.stopAll)
	pkg := addPackage(t, ts.eng)
	c, err := ts.eng.Create(campaign.Spec{Name: "old ones", Package: pkg.ID, Method: campaign.MethodPush,
		Target: campaign.Target{Endpoints: "dev-*", FirmwareVersion: "0.9",
			Resource: &campaign.ResourceMatch{Path: "/3/0/0", Equals: "Acme"}},
		Deadline: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c = waitState(t, ts.eng, c.ID, 30*time.Second, campaign.StateDone)
	for i, d := range c.Devices {
		want, upgrades := campaign.DeviceSucceeded, 1
		if i%2 == 1 {
			want, upgrades = campaign.DeviceSkipped, 0
		}
		if d.Status != want || f.upgrades(d.Endpoint) != upgrades {
			t.Errorf("%s: %s (%s), %d updates applied; want %s", d.Endpoint, d.Status, d.Error, f.upgrades(d.Endpoint), want)
		}
		if want == campaign.DeviceSucceeded && d.Bytes != pkg.Size {
			t.Errorf("%s: %d of %d bytes pushed", d.Endpoint, d.Bytes, pkg.Size)
		}
	}
}

// TestCreateRefuses checks what Create refuses before anything starts.
func TestCreateRefuses(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", &server.MemoryStore{}, t.TempDir(), campaign.Config{})
	f := newFleet()
	f.start(t, ts.srv, "dev-000", "1.0")
	t.Cleanup(f.stopAll)
	pkg := addPackage(t, ts.eng)
	later := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name string
		spec campaign.Spec
	}{
		{"no name", campaign.Spec{Package: pkg.ID, Deadline: later}},
		{"unknown package", campaign.Spec{Name: "x", Package: "nope", Deadline: later}},
		{"no device", campaign.Spec{Name: "x", Package: pkg.ID, Target: campaign.Target{Endpoints: "other-*"}, Deadline: later}},
		{"bad glob", campaign.Spec{Name: "x", Package: pkg.ID, Target: campaign.Target{Endpoints: "["}, Deadline: later}},
		{"past deadline", campaign.Spec{Name: "x", Package: pkg.ID, Deadline: time.Now().Add(-time.Minute)}},
		{"no deadline", campaign.Spec{Name: "x", Package: pkg.ID}},
		{"coaps", campaign.Spec{Name: "x", Package: pkg.ID, Method: campaign.MethodPullCoAPS, Deadline: later}},
		{"unknown method", campaign.Spec{Name: "x", Package: pkg.ID, Method: "carrier-pigeon", Deadline: later}},
		{"threshold", campaign.Spec{Name: "x", Package: pkg.ID, Rollout: campaign.Rollout{FailureThresholdPercent: ptr(120.0)}, Deadline: later}},
		{"resource path", campaign.Spec{Name: "x", Package: pkg.ID, Target: campaign.Target{Resource: &campaign.ResourceMatch{Path: "/3"}}, Deadline: later}},
	} {
		if _, err := ts.eng.Create(tc.spec); err == nil {
			t.Errorf("%s: created", tc.name)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if n := len(ts.eng.Campaigns()); n != 0 {
		t.Errorf("%d campaigns exist", n)
	}
}

// TestDeviceThatNeverComesBackFails has a device stay Updating for good:
// after the engine's device timeout it counts as failed, and with a
// threshold of 0 % the campaign pauses. The timeout allows for
// server.Update's own poll of the state every 3 s, when a notification
// is missed.
func TestDeviceThatNeverComesBackFails(t *testing.T) {
	t.Parallel() // it mostly waits for its timeout
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", &server.MemoryStore{}, t.TempDir(), campaign.Config{DeviceTimeout: 7 * time.Second})
	never := make(chan struct{})
	defer close(never)
	f := newFleet()
	f.hold = func(ep string) <-chan struct{} {
		if ep == "dev-001" {
			return never
		}
		return nil
	}
	f.startAll(t, ts.srv, 3, "1.0")
	t.Cleanup(f.stopAll)
	pkg := addPackage(t, ts.eng)
	c, err := ts.eng.Create(campaign.Spec{Name: "stuck", Package: pkg.ID,
		Rollout: campaign.Rollout{FailureThresholdPercent: ptr(0.0)}, Deadline: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c = waitState(t, ts.eng, c.ID, 30*time.Second, campaign.StatePaused)
	d := c.Devices[1]
	if d.Status != campaign.DeviceFailed || !strings.Contains(d.Error, "no outcome within 7s") || d.State != "Updating" {
		t.Errorf("%s: %s in %s: %s; want failed for want of an outcome", d.Endpoint, d.Status, d.State, d.Error)
	}
	if c.Counts.Succeeded != 2 || !strings.Contains(c.PauseReason, "1 of 3 devices failed") {
		t.Errorf("counts %+v, pause reason %q", c.Counts, c.PauseReason)
	}
}

// flakyStore refuses to store a device's start while failing is set.
type flakyStore struct {
	server.MemoryStore
	failing atomic.Bool
	refused atomic.Int32
}

func (s *flakyStore) PutRecords(bucket string, recs map[string][]byte) error {
	for _, v := range recs {
		if s.failing.Load() && strings.Contains(string(v), `"status":"running"`) {
			s.refused.Add(1)
			return errors.New("disk full")
		}
	}
	return s.MemoryStore.PutRecords(bucket, recs)
}

// TestNoStartWithoutRecord: while the store cannot record that a
// device's update starts, the update does not start.
func TestNoStartWithoutRecord(t *testing.T) {
	store := &flakyStore{}
	store.failing.Store(true)
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", store, t.TempDir(), campaign.Config{})
	f := newFleet()
	f.startAll(t, ts.srv, 2, "1.0")
	t.Cleanup(f.stopAll)
	pkg := addPackage(t, ts.eng)
	c, err := ts.eng.Create(campaign.Spec{Name: "x", Package: pkg.ID, Deadline: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 10*time.Second, func() error {
		if store.refused.Load() < 3 {
			return errNotYet("the engine has not tried three times")
		}
		return nil
	})
	got, _ := ts.eng.Campaign(c.ID)
	for _, d := range got.Devices {
		f.mu.Lock()
		opens := f.opens[d.Endpoint]
		f.mu.Unlock()
		if d.Status != campaign.DevicePending || d.Attempts != 0 || opens != 0 {
			t.Errorf("%s: %s, %d attempts, %d downloads, with nothing stored", d.Endpoint, d.Status, d.Attempts, opens)
		}
	}
	store.failing.Store(false)
	if c = waitState(t, ts.eng, c.ID, 30*time.Second, campaign.StateDone); c.Counts.Succeeded != 2 {
		t.Errorf("counts %+v", c.Counts)
	}
}

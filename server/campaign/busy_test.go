package campaign_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
)

// A device that another update is running on when its wave comes (an
// operator's update by hand, or another campaign's) waits for its next
// registration, as an offline one does: the server refuses a second
// update of a device (server.ErrUpdateRunning), and that refusal is not
// the package's failure, so it must neither count against the failure
// threshold nor end the device's part in the campaign.
func TestBusyDeviceWaits(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", "127.0.0.1:0", &server.MemoryStore{}, t.TempDir(), campaign.Config{})
	release := make(chan struct{})
	f := newFleet()
	f.hold = func(ep string) <-chan struct{} {
		if f.upgrades(ep) == 1 {
			return release // the update by hand stays Updating
		}
		return nil
	}
	f.start(t, ts.srv, "dev-000", "1.0")
	t.Cleanup(f.stopAll)

	img := filepath.Join(t.TempDir(), "by-hand.bin")
	if err := os.WriteFile(img, []byte(strings.Repeat("by hand ", 64)), 0o600); err != nil {
		t.Fatal(err)
	}
	byHand := make(chan error, 1)
	go func() {
		_, err := ts.srv.Update(context.Background(), "dev-000", img, server.PullCoAP, nil)
		byHand <- err
	}()
	waitfor.Until(t, 20*time.Second, func() error {
		if f.upgrades("dev-000") != 1 {
			return errors.New("the update by hand has not reached Updating")
		}
		return nil
	})

	pkg := addPackage(t, ts.eng)
	c, err := ts.eng.Create(campaign.Spec{Name: "busy", Package: pkg.ID, Target: campaign.Target{Endpoints: "dev-*"},
		Rollout: campaign.Rollout{FailureThresholdPercent: ptr(0.0)}, Deadline: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 20*time.Second, func() error {
		c, _ = ts.eng.Campaign(c.ID)
		if d := c.Devices[0]; d.Status != campaign.DeviceWaiting {
			return fmt.Errorf("dev-000 is %s (%s), want waiting while the other update runs", d.Status, d.Error)
		}
		return nil
	})
	if c.State != campaign.StateRunning {
		t.Fatalf("campaign %s (%s), want running: a busy device is not a failure", c.State, c.PauseReason)
	}

	close(release)
	if err := <-byHand; err != nil {
		t.Fatalf("update by hand: %v", err)
	}
	// The device restarts into its new firmware and registers again:
	// the campaign's turn.
	f.devs["dev-000"].Stop()
	f.start(t, ts.srv, "dev-000", "1.0")
	c = waitState(t, ts.eng, c.ID, 30*time.Second, campaign.StateDone)
	if d := c.Devices[0]; d.Status != campaign.DeviceSucceeded {
		t.Errorf("dev-000 is %s (%s), want succeeded", d.Status, d.Error)
	}
	if n := f.upgrades("dev-000"); n != 2 {
		t.Errorf("dev-000 applied %d updates, want 2 (by hand, then the campaign's)", n)
	}
}

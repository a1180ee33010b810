package lwm2m_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// queueCfg is a queue-mode client that sleeps a second after its last
// exchange (long enough for a test's request after a wake, even on a
// loaded machine) and whose lifetime calls for no Update during a test.
func queueCfg() lwm2m.Config {
	return lwm2m.Config{QueueMode: true, QueueWindow: time.Second}
}

// phase returns the phase of the client's only session.
func phase(c *lwm2m.Client) string {
	ss := c.Servers()
	if len(ss) == 0 {
		return ""
	}
	return ss[0].Phase
}

func waitPhase(t *testing.T, c *lwm2m.Client, want string) {
	t.Helper()
	waitfor.Until(t, 10*time.Second, func() error {
		if p := phase(c); p != want {
			return fmt.Errorf("phase %q, want %q", p, want)
		}
		return nil
	})
}

// nextUpdate waits for the next Registration Update the server receives.
func nextUpdate(t *testing.T, h *harness) lwm2mtest.Registration {
	t.Helper()
	for {
		r, err := h.srv.Next(h.ctx())
		if err != nil {
			t.Fatalf("no Registration Update: %v", err)
		}
		if r.Update {
			return r
		}
	}
}

func TestQueueModeRegistersWithQ(t *testing.T) {
	h := start(t, queueCfg())
	if !slices.Contains(h.reg.Query, "Q") || !slices.Contains(h.reg.Query, "b=U") {
		t.Errorf("LwM2M 1.1 Register query %q, want Q and b=U", h.reg.Query)
	}
	cfg := queueCfg()
	cfg.Version = lwm2m.Version10
	h10 := start(t, cfg)
	if !slices.Contains(h10.reg.Query, "b=UQ") || slices.Contains(h10.reg.Query, "Q") {
		t.Errorf("LwM2M 1.0 Register query %q, want b=UQ and no Q", h10.reg.Query)
	}
	plain := start(t, lwm2m.Config{})
	if slices.Contains(plain.reg.Query, "Q") {
		t.Errorf("Register without queue mode carries Q: %q", plain.reg.Query)
	}
}

// A 1.0 server learns of queue mode from the binding: /1/0/7 reads UQ as
// the Register said, and a write may not contradict it.
func TestQueueModeBinding10(t *testing.T) {
	cfg := queueCfg()
	cfg.Version = lwm2m.Version10
	cfg.QueueWindow = time.Minute // awake for the reads below
	h := start(t, cfg)
	if r := h.do(codes.GET, "/1/0/7", 0, nil); r.Code != codes.Content || string(r.Payload) != "UQ" {
		t.Fatalf("1.0 queue-mode /1/0/7 = %v %q, want UQ as in the Register", r.Code, r.Payload)
	}
	if r := h.do(codes.PUT, "/1/0/7", 0, []byte("U")); r.Code != codes.BadRequest {
		t.Errorf("write of binding U to a queue-mode client: %v, want 4.00", r.Code)
	}
	if r := h.do(codes.PUT, "/1/0/7", 0, []byte("UQ")); r.Code != codes.Changed {
		t.Errorf("write of its own binding UQ: %v, want 2.04", r.Code)
	}
	plain := start(t, lwm2m.Config{Version: lwm2m.Version10})
	if r := plain.do(codes.GET, "/1/0/7", 0, nil); string(r.Payload) != "U" {
		t.Errorf("1.0 client without queue mode: /1/0/7 = %q, want U", r.Payload)
	}
}

// After the window the client stops answering; Wake makes it send an
// Update first, and then it answers again.
func TestQueueModeSleepsAfterWindowAndWakes(t *testing.T) {
	h := start(t, queueCfg())
	waitPhase(t, h.client, "sleeping")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if r, err := lwm2mtest.Do(ctx, h.conn(), codes.GET, "/3/0/0", 0, nil); err == nil {
		t.Fatalf("sleeping client answered %v", r.Code)
	}
	h.client.Wake()
	up := nextUpdate(t, h)
	if r := h.do(codes.GET, "/3/0/0", 0, nil); r.Code != codes.Content || string(r.Payload) != "Acme" {
		t.Fatalf("awake client answered %v %q", r.Code, r.Payload)
	}
	if up.Conn != h.conn() {
		t.Error("the client woke on another port: the server's observations would be lost")
	}
	waitPhase(t, h.client, "sleeping") // and sleeps again after the window
}

// The lifetime's Update wakes a sleeping client.
func TestQueueModeWakesForLifetimeUpdate(t *testing.T) {
	cfg := queueCfg()
	cfg.Lifetime = 2 * time.Second // an Update every second with fastTx
	cfg.QueueWindow = 300 * time.Millisecond
	h := start(t, cfg)
	waitPhase(t, h.client, "sleeping")
	nextUpdate(t, h)
	waitPhase(t, h.client, "sleeping")
	nextUpdate(t, h) // and again
}

// A notification that becomes due wakes the client; the Update goes
// first.
func TestQueueModeWakesForNotification(t *testing.T) {
	obj := counter()
	h := start(t, queueCfg(), obj)
	ch, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	<-ch
	waitPhase(t, h.client, "sleeping")
	h.srv.Pending()
	obj.Set(0, 5700, model.Float(12))
	select {
	case n := <-ch:
		if string(n.Payload) != "12" {
			t.Fatalf("notification %q, want 12", n.Payload)
		}
	case <-h.ctx().Done():
		t.Fatal("no notification from the sleeping client")
	}
	// The Update reached the server before the notification left.
	if !slices.ContainsFunc(h.srv.Pending(), func(r lwm2mtest.Registration) bool { return r.Update }) {
		t.Fatal("no Registration Update before the notification")
	}
}

// With Notification Storing (/1/0/6) false, a notification that becomes
// due while the client sleeps is dropped and does not wake it.
func TestQueueModeNotificationStoringFalseDrops(t *testing.T) {
	obj := counter()
	h := start(t, queueCfg(), obj)
	if r := h.do(codes.PUT, "/1/0/6", 0, []byte("0")); r.Code != codes.Changed {
		t.Fatalf("write /1/0/6: %v", r.Code)
	}
	ch, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	<-ch
	waitPhase(t, h.client, "sleeping")
	h.srv.Pending()
	obj.Set(0, 5700, model.Float(12))
	if err := h.client.WaitNotified(h.ctx(), model.NewPath(3300, 0, 5700)); err != nil {
		t.Fatal(err)
	}
	if p := phase(h.client); p != "sleeping" {
		t.Fatalf("phase %q after a change with Notification Storing false, want sleeping", p)
	}
	if ev := h.srv.Pending(); len(ev) != 0 {
		t.Fatalf("the client woke: %+v", ev)
	}
	h.client.Wake()
	nextUpdate(t, h)
	obj.Set(0, 5700, model.Float(13))
	if got := recvNotification(t, h, ch); got != "13" {
		t.Errorf("first notification after waking %q, want 13 (12 was dropped)", got)
	}
}

package lwm2m_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

func waitHeld(t *testing.T, c *lwm2m.Client, n int) {
	t.Helper()
	waitfor.Until(t, 10*time.Second, func() error {
		if got := lwm2m.Held(c); got != n {
			return fmt.Errorf("%d notifications held, want %d", got, n)
		}
		return nil
	})
}

func recvNotification(t *testing.T, h *harness, ch <-chan lwm2mtest.Response) string {
	t.Helper()
	select {
	case n := <-ch:
		return string(n.Payload)
	case <-h.ctx().Done():
		t.Fatal("no notification")
		return ""
	}
}

// Offline, the client closes its socket and holds the notifications
// that become due, the last value of each path, in the order they became
// due; ExitOffline sends an Update, then them.
func TestOfflineHoldsNotificationsUntilExit(t *testing.T) {
	a, b := counter(), lwm2m.NewStatic(3301, "", lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRW})
	b.Set(0, 5700, model.Float(100))
	h := start(t, lwm2m.Config{}, a, b)
	chA, cancelA, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancelA()
	chB, cancelB, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3301/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancelB()
	<-chA
	<-chB

	h.client.EnterOffline()
	h.client.EnterOffline() // idempotent
	waitPhase(t, h.client, "offline")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if r, err := lwm2mtest.Do(ctx, h.conn(), codes.GET, "/3/0/0", 0, nil); err == nil {
		t.Fatalf("offline client answered %v", r.Code)
	}
	b.Set(0, 5700, model.Float(101)) // b first
	waitHeld(t, h.client, 1)
	a.Set(0, 5700, model.Float(11))
	waitHeld(t, h.client, 2)
	a.Set(0, 5700, model.Float(12)) // a's last value is what goes out
	b.Set(0, 5700, model.Float(102))
	h.srv.Pending()

	h.client.ExitOffline()
	h.client.ExitOffline()
	if got := recvNotification(t, h, chB); got != "102" {
		t.Errorf("first notification of b %q, want the last value 102", got)
	}
	if got := recvNotification(t, h, chA); got != "12" {
		t.Errorf("first notification of a %q, want the last value 12", got)
	}
	pending := h.srv.Pending()
	if len(pending) == 0 || !pending[0].Update {
		t.Fatalf("server events before the notifications %+v, want an Update", pending)
	}
	a.Set(0, 5700, model.Float(13))
	if got := recvNotification(t, h, chA); got != "13" {
		t.Errorf("notification after a new change %q, want 13 (an older value was sent twice?)", got)
	}
}

// The ordering of two held notifications, told apart by when each
// arrives at the server.
func TestOfflineSendsHeldNotificationsInOrder(t *testing.T) {
	a, b := counter(), lwm2m.NewStatic(3301, "", lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRW})
	b.Set(0, 5700, model.Float(100))
	h := start(t, lwm2m.Config{}, a, b)
	got := make(chan string, 16)
	for _, p := range []string{"/3300/0/5700", "/3301/0/5700"} {
		obs, err := h.conn().Observe(h.ctx(), p, func(m *pool.Message) {
			body, _ := m.ReadBody()
			got <- p + "=" + string(body)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer obs.Cancel(context.Background())
	}
	<-got
	<-got
	h.client.EnterOffline()
	waitPhase(t, h.client, "offline")
	b.Set(0, 5700, model.Float(101))
	waitHeld(t, h.client, 1)
	a.Set(0, 5700, model.Float(11))
	waitHeld(t, h.client, 2)
	h.client.ExitOffline()
	want := []string{"/3301/0/5700=101", "/3300/0/5700=11"}
	for _, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("notification %q, want %q (in the order they became due)", g, w)
			}
		case <-h.ctx().Done():
			t.Fatal("no notification after ExitOffline")
		}
	}
}

// With Notification Storing (/1/0/6) false, what became due offline is
// dropped.
func TestOfflineNotificationStoringFalseDrops(t *testing.T) {
	a := counter()
	h := start(t, lwm2m.Config{}, a)
	if r := h.do(codes.PUT, "/1/0/6", 0, []byte("0")); r.Code != codes.Changed {
		t.Fatalf("write /1/0/6: %v", r.Code)
	}
	ch, cancel, err := lwm2mtest.Observe(h.ctx(), h.conn(), "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	<-ch
	h.client.EnterOffline()
	waitPhase(t, h.client, "offline")
	a.Set(0, 5700, model.Float(11))
	h.client.WaitNotified(h.ctx(), model.NewPath(3300, 0, 5700)) // dropped, not held
	if n := lwm2m.Held(h.client); n != 0 {
		t.Fatalf("%d notifications held with Notification Storing false", n)
	}
	h.client.ExitOffline()
	nextUpdate(t, h)
	a.Set(0, 5700, model.Float(12))
	if got := recvNotification(t, h, ch); got != "12" {
		t.Errorf("first notification after ExitOffline %q, want 12 (11 was due offline and must be dropped)", got)
	}
}

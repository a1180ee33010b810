package lwm2m_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// rawClient runs a client with obj against a raw server and waits until
// it is registered.
func rawClient(t *testing.T, cfg lwm2m.Config, objs ...lwm2m.Object) (*lwm2mtest.RawServer, *lwm2m.Client, context.Context) {
	t.Helper()
	srv := lwm2mtest.StartRaw(t)
	cfg.Endpoint = "raw"
	cfg.Server = srv.URI()
	if cfg.Tx == (lwm2m.TxParams{}) {
		cfg.Tx = fastTx
	}
	cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := c.AddObject(o); err != nil {
			t.Fatal(err)
		}
	}
	return srv, c, srv.Run(t, c)
}

// noNote fails if a notification comes within d.
func noNote(t *testing.T, srv *lwm2mtest.RawServer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if n, err := srv.NextNote(ctx); err == nil {
		t.Fatalf("notification %s after the observation ended (type %v)", n.Msg.Payload, n.Msg.Type)
	}
}

// A Reset in answer to a notification ends the observation (RFC 7641
// §3.6, §4.5), whether the notification was Confirmable or not.
func TestResetEndsObservation(t *testing.T) {
	for _, tc := range []struct {
		name string
		non  bool
	}{{"confirmable", false}, {"non-confirmable", true}} {
		t.Run(tc.name, func(t *testing.T) {
			obj := counter()
			srv, c, ctx := rawClient(t, lwm2m.Config{NonConfirmableNotifications: tc.non}, obj)
			first, err := srv.Observe(ctx, "/3300/0/5700")
			if err != nil || first.Code != codes.Content {
				t.Fatalf("observe: %v %v", first.Code, err)
			}
			srv.OnNotify(func(lwm2mtest.Note) lwm2mtest.Answer { return lwm2mtest.Reset })
			obj.Set(0, 5700, model.Float(11))
			n, err := srv.NextNote(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := message.Confirmable
			if tc.non {
				want = message.NonConfirmable
			}
			if n.Msg.Type != want || string(n.Msg.Token) != string(first.Token) {
				t.Fatalf("notification type %v token %x, want %v %x", n.Msg.Type, n.Msg.Token, want, first.Token)
			}
			waitfor.Until(t, 5*time.Second, func() error {
				if n := c.Observations(); n != 0 {
					return fmt.Errorf("%d observations after a Reset", n)
				}
				return nil
			})
			obj.Set(0, 5700, model.Float(12))
			noNote(t, srv, 300*time.Millisecond)
		})
	}
}

// A Reset that answers nothing of ours (another message ID) ends nothing.
func TestUnrelatedResetKeepsObservation(t *testing.T) {
	obj := counter()
	srv, c, ctx := rawClient(t, lwm2m.Config{}, obj)
	if _, err := srv.Observe(ctx, "/3300/0/5700"); err != nil {
		t.Fatal(err)
	}
	srv.OnNotify(func(n lwm2mtest.Note) lwm2mtest.Answer {
		srv.Send(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: n.Msg.MessageID + 1})
		return lwm2mtest.Ack
	})
	obj.Set(0, 5700, model.Float(11))
	if _, err := srv.NextNote(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if c.Observations() != 1 {
		t.Fatalf("%d observations, want 1", c.Observations())
	}
}

// Notifications are Confirmable by default; Config and the con attribute
// (LwM2M 1.2 §5.1.2) make them Non-confirmable, and con=1 overrides Config.
func TestNotificationType(t *testing.T) {
	for _, tc := range []struct {
		name string
		non  bool
		con  string // Write-Attributes con= on the object, "" for none
		want message.Type
	}{
		{"default", false, "", message.Confirmable},
		{"config", true, "", message.NonConfirmable},
		{"con=0", false, "0", message.NonConfirmable},
		{"con=1 over config", true, "1", message.Confirmable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := counter()
			srv, _, ctx := rawClient(t, lwm2m.Config{NonConfirmableNotifications: tc.non}, obj)
			if tc.con != "" {
				r, err := srv.Request(ctx, codes.PUT, "/3300", query("con="+tc.con))
				if err != nil || r.Code != codes.Changed {
					t.Fatalf("write-attributes: %v %v", r.Code, err)
				}
			}
			if _, err := srv.Observe(ctx, "/3300/0/5700"); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				obj.Set(0, 5700, model.Float(float64(20+i)))
				n, err := srv.NextNote(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n.Msg.Type != tc.want {
					t.Fatalf("notification %d type %v, want %v", i, n.Msg.Type, tc.want)
				}
			}
		})
	}
}

// Observations are capped: one beyond Config.MaxObservations gets 5.03
// without Observe and is never notified; a re-observe of the same token or
// the same target replaces rather than adds.
func TestObservationCap(t *testing.T) {
	obj := lwm2m.NewStatic(3300, "",
		lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRW},
		lwm2m.Resource{ID: 5701, Type: model.TypeString, Ops: lwm2m.OpRW},
		lwm2m.Resource{ID: 5750, Type: model.TypeString, Ops: lwm2m.OpRW})
	obj.Set(0, 5700, model.Float(1))
	obj.Set(0, 5701, model.String("u"))
	obj.Set(0, 5750, model.String("n"))
	srv, c, ctx := rawClient(t, lwm2m.Config{MaxObservations: 2}, obj)
	observe := func(path string, tok message.Token) message.Message {
		t.Helper()
		r, err := srv.ObserveToken(ctx, path, tok)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := observe("/3300/0/5700", nil)
	b := observe("/3300/0/5701", nil)
	if a.Code != codes.Content || b.Code != codes.Content {
		t.Fatalf("codes %v %v", a.Code, b.Code)
	}
	// The same target with a new token replaces (RFC 7641 §4.1).
	a2 := observe("/3300/0/5700", nil)
	// The same token on another target replaces too.
	b2 := observe("/3300/0/5750", b.Token)
	for _, r := range []message.Message{a2, b2} {
		if r.Code != codes.Content || !r.Options.HasOption(message.Observe) {
			t.Fatalf("re-observe answered %v (observe %v)", r.Code, r.Options.HasOption(message.Observe))
		}
	}
	if n := c.Observations(); n != 2 {
		t.Fatalf("%d observations, want 2", n)
	}
	over := observe("/3300/0/5701", nil)
	if over.Code != codes.ServiceUnavailable || over.Options.HasOption(message.Observe) {
		t.Fatalf("observation beyond the cap answered %v (observe %v), want 5.03 without Observe", over.Code, over.Options.HasOption(message.Observe))
	}
	if n := c.Observations(); n != 2 {
		t.Fatalf("%d observations, want 2", n)
	}
	// Each change notifies its one observer, on the newest token.
	obj.Set(0, 5701, model.String("u2"))
	obj.Set(0, 5700, model.Float(2))
	n, err := srv.NextNote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(n.Msg.Token) != string(a2.Token) || string(n.Msg.Payload) != "2" {
		t.Fatalf("notification %q on token %x, want \"2\" on %x", n.Msg.Payload, n.Msg.Token, a2.Token)
	}
	noNote(t, srv, 200*time.Millisecond)
}

// The default cap is 64.
func TestObservationCapDefault(t *testing.T) {
	obj := lwm2m.NewStatic(3300, "", lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRW})
	for i := range 65 {
		obj.Set(uint16(i), 5700, model.Float(float64(i)))
	}
	srv, _, ctx := rawClient(t, lwm2m.Config{}, obj)
	for i := range 65 {
		r, err := srv.Observe(ctx, fmt.Sprintf("/3300/%d/5700", i))
		if err != nil {
			t.Fatal(err)
		}
		want := codes.Content
		if i == 64 {
			want = codes.ServiceUnavailable
		}
		if r.Code != want {
			t.Fatalf("observation %d answered %v, want %v", i+1, r.Code, want)
		}
	}
}

// WaitNotified returns only once the notification of the last change has
// been acknowledged, even behind an earlier one still waiting for its own
// acknowledgement.
func TestWaitNotifiedAcknowledged(t *testing.T) {
	obj := counter()
	srv, c, ctx := rawClient(t, lwm2m.Config{}, obj)
	if _, err := srv.Observe(ctx, "/3300/0/5700"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []string
	srv.OnNotify(func(n lwm2mtest.Note) lwm2mtest.Answer {
		a := lwm2mtest.Ack
		a.Delay = 200 * time.Millisecond
		a.Then = func() { mu.Lock(); acked = append(acked, string(n.Msg.Payload)); mu.Unlock() }
		return a
	})
	obj.Set(0, 5700, model.Float(11))
	if _, err := srv.NextNote(ctx); err != nil { // 11 is out, its ack pending
		t.Fatal(err)
	}
	obj.Set(0, 5700, model.Float(12))
	if err := c.WaitNotified(ctx, model.NewPath(3300, 0, 5700)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(acked, "12") {
		t.Fatalf("WaitNotified returned with acknowledgements of %q only, want 12's", acked)
	}
}

// A notification never acknowledged is given up on after its
// retransmissions, which ends the observation (RFC 7641 §4.5) and
// WaitNotified.
func TestWaitNotifiedNeverAcknowledged(t *testing.T) {
	obj := counter()
	srv, c, ctx := rawClient(t, lwm2m.Config{Tx: lwm2m.TxParams{AckTimeout: 50 * time.Millisecond, MaxRetransmit: 2}}, obj)
	if _, err := srv.Observe(ctx, "/3300/0/5700"); err != nil {
		t.Fatal(err)
	}
	srv.OnNotify(func(lwm2mtest.Note) lwm2mtest.Answer { return lwm2mtest.Ignore })
	obj.Set(0, 5700, model.Float(11))
	if err := c.WaitNotified(ctx, model.NewPath(3300, 0, 5700)); err != nil {
		t.Fatal(err)
	}
	// The first transmission and MAX_RETRANSMIT retransmissions.
	for i := range 3 {
		n, err := srv.NextNote(ctx)
		if err != nil || string(n.Msg.Payload) != "11" {
			t.Fatalf("transmission %d: %q %v", i, n.Msg.Payload, err)
		}
	}
	if n := c.Observations(); n != 0 {
		t.Fatalf("%d observations after an unacknowledged notification", n)
	}
	// Nothing observed: WaitNotified returns at once.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := c.WaitNotified(wctx, model.NewPath(3300)); err != nil {
		t.Fatal(err)
	}
}

// Refusals are logged, but a peer that keeps asking cannot flood the log.
func TestObservationCapLogBounded(t *testing.T) {
	var logs syncbuf.Buffer
	srv, _, ctx := rawClient(t, lwm2m.Config{MaxObservations: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, counter())
	refused := 0
	for i := range 20 {
		// Text replaces text; each SenML one finds no room.
		r, err := srv.Observe(ctx, "/3300/0/5700", accept(content.Format(i%2*int(content.SenMLJSON))))
		if err != nil {
			t.Fatal(err)
		}
		if r.Code == codes.ServiceUnavailable {
			refused++
		}
	}
	if n := strings.Count(logs.String(), "observation refused"); refused != 10 || n != 1 {
		t.Errorf("%d refusal warnings for %d refusals in a row, want 1 for 10:\n%s", n, refused, logs.String())
	}
}

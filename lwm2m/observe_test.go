package lwm2m_test

import (
	"context"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
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
	cfg.Logger = testLogger(t)
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := c.AddObject(o); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := srv.WaitRegister(ctx); err != nil {
		t.Fatal(err)
	}
	for !c.Registered() && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return srv, c, ctx
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
			for deadline := time.Now().Add(5 * time.Second); c.Observations() != 0; {
				if time.Now().After(deadline) {
					t.Fatalf("%d observations after a Reset", c.Observations())
				}
				time.Sleep(time.Millisecond)
			}
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

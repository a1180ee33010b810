package fwupdate_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// The upgrade runs only once the Updating notification has been
// acknowledged, even when the server acknowledges slowly and the
// Downloaded notification is still waiting for its own acknowledgement
// (docs/FIRMWARE_UPDATE.md "Notifications"); a server that never
// acknowledges delays it only until
// the retransmissions give up.
func TestUpdatingNotifiedBeforeUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name  string
		acked bool
	}{{"ack after 200ms", true}, {"never acked", false}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := lwm2mtest.StartRaw(t)
			c, err := lwm2m.New(lwm2m.Config{Endpoint: "fw", Server: srv.URI(), Logger: lwm2mtest.Logger(t),
				Tx: lwm2m.TxParams{AckTimeout: 100 * time.Millisecond, MaxRetransmit: 2}})
			if err != nil {
				t.Fatal(err)
			}
			h := newMem()
			obj, err := fwupdate.Install(c, h, fwupdate.Config{Logger: lwm2mtest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(obj.Close)
			ctx := srv.Run(t, c)
			if r, err := srv.Observe(ctx, "/5/0/3"); err != nil || string(r.Payload) != "0" {
				t.Fatalf("observe: %q %v", r.Payload, err)
			}
			var mu sync.Mutex
			var acked []string
			srv.OnNotify(func(n lwm2mtest.Note) lwm2mtest.Answer {
				if !tc.acked {
					return lwm2mtest.Ignore
				}
				a := lwm2mtest.Ack
				a.Delay = 200 * time.Millisecond
				a.Then = func() { mu.Lock(); acked = append(acked, string(n.Msg.Payload)); mu.Unlock() }
				return a
			})
			upgraded := make(chan []string, 1)
			h.mu.Lock()
			h.upgrade = func() error {
				mu.Lock()
				upgraded <- slices.Clone(acked)
				mu.Unlock()
				return nil
			}
			h.mu.Unlock()
			r, err := srv.RequestBody(ctx, codes.PUT, "/5/0/0", image(1000, 1), coapopt.Uint(message.ContentFormat, 42))
			if err != nil || r.Code != codes.Changed {
				t.Fatalf("push: %v %v", r.Code, err)
			}
			if r, err := srv.Request(ctx, codes.POST, "/5/0/2"); err != nil || r.Code != codes.Changed {
				t.Fatalf("update: %v %v", r.Code, err)
			}
			select {
			case seen := <-upgraded:
				if tc.acked && !slices.Contains(seen, "3") {
					t.Fatalf("upgrade ran with acknowledged State notifications %q, want Updating (3) among them", seen)
				}
			case <-ctx.Done():
				t.Fatal("the upgrade never ran")
			}
		})
	}
}

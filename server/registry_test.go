package server

import (
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// A registration Update during a firmware update is not a restart (Core
// 6.2.2): the update keeps its observations and reports one
// re-registration, the one after the device rebooted.
func TestUpdateIsNotReregistration(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 5000)
	ctx := ctxT(t)
	updated := false
	var phases []string
	r, err := s.Update(ctx, "dev1", f, PullCoAP, func(p Progress) {
		phases = append(phases, p.Phase)
		if p.Phase != "uri" || updated {
			return
		}
		updated = true
		// An Update while the server waits for the firmware state.
		d.mu.Lock()
		loc := d.loc
		d.mu.Unlock()
		resp, err := d.conn().Post(ctx, loc, message.TextPlain, nil)
		if err != nil || resp.Code() != codes.Changed {
			t.Errorf("registration update: %v %v", resp, err)
		}
	})
	if err != nil || r != ResultSuccess {
		t.Fatalf("update: %v %v", r, err)
	}
	n := 0
	for _, p := range phases {
		if p == "registered" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d re-registrations reported, want 1 (the reboot): %v", n, phases)
	}
}

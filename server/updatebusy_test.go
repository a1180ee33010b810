package server

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// A second Update of a device while one runs is refused with
// ErrUpdateRunning, and leaves the first alone. Before,
// it ran: found with 3000 campaigns over the same 3 devices, which
// started 9000 updates at once, each resetting the others' downloads (a
// device could end up running one campaign's package while another
// campaign counted its own as installed).
func TestUpdateRefusesASecondUpdateOfADevice(t *testing.T) {
	s := startServer(t, &Server{})
	d := newStallDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 3000)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var wg sync.WaitGroup
	var first error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, first = s.Update(ctx, "dev1", f, PullCoAP, nil)
	}()
	<-d.uri // the first is delivering
	if _, err := s.Update(ctxT(t), "dev1", f, PullCoAP, nil); !errors.Is(err, ErrUpdateRunning) {
		t.Fatalf("second update: %v, want ErrUpdateRunning", err)
	}
	cancel()
	wg.Wait()
	if !errors.Is(first, context.Canceled) {
		t.Fatalf("first update: %v, want it cancelled, not disturbed", first)
	}
	// Once it ended, the device may be updated again.
	if !s.claimUpdate("dev1") {
		t.Fatal("the device stays marked as updating")
	}
}

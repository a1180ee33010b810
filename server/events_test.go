package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

func TestEventHubSlowSubscriber(t *testing.T) {
	var h hub
	ctx, cancel := context.WithCancel(context.Background())
	sub := h.subscribe(ctx)
	// Nobody reads: publishing goes on, past the buffer, without blocking.
	for i := range 3 * subscriberBuffer {
		h.publish(Event{Kind: "device", Endpoint: fmt.Sprint(i)})
	}
	if e, ok := sub.next(ctx); !ok || e.Kind != "resync" {
		t.Fatalf("after a dropped event: %+v %v, want a resync", e, ok)
	}
	for i := range subscriberBuffer {
		if e, _ := sub.next(ctx); e.Endpoint != fmt.Sprint(i) {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	h.publish(Event{Kind: "device", Endpoint: "after"})
	if e, _ := sub.next(ctx); e.Endpoint != "after" {
		t.Fatalf("after draining: %+v", e)
	}
	cancel()
	waitfor.Until(t, 5*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.subs) != 0 {
			return errors.New("subscriber still registered after its context ended")
		}
		return nil
	})
	if _, ok := sub.next(ctx); ok {
		t.Error("next after the context ended")
	}
}

func TestSubscribe(t *testing.T) {
	s := startServer(t, &Server{})
	got := make(chan Event, 16)
	s.Subscribe(ctxT(t), func(e Event) { got <- e })
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	want := Event{Kind: "device", Endpoint: "dev1", Change: "registered"}
	if e := <-got; e != want {
		t.Fatalf("event %+v, want %+v", e, want)
	}
	s.PublishEvent(Event{Kind: "campaign", ID: "c1"})
	if e := <-got; e.Kind != "campaign" || e.ID != "c1" {
		t.Fatalf("published event %+v", e)
	}
	d.close()
	// The device is gone without a word: its registration expires.
	s.expire(time.Now().Add(2 * time.Hour))
	for e := range got {
		if e.Kind == "device" && e.Endpoint == "dev1" && e.Change == "expired" {
			break
		}
		if e.Kind == "device" && e.Change != "inventory" {
			t.Fatalf("after expiry: %+v", e)
		}
	}
}

func TestDeviceHistoryBounded(t *testing.T) {
	s := &Server{MaxRegistrations: 2}
	for i := range 3 * historyLen {
		s.deviceEvent("a", "updated", fmt.Sprint(i))
	}
	h := s.History("a")
	if len(h) != historyLen || h[0].Detail != fmt.Sprint(2*historyLen) || h[len(h)-1].Detail != fmt.Sprint(3*historyLen-1) {
		t.Fatalf("history of %d entries from %q to %q", len(h), h[0].Detail, h[len(h)-1].Detail)
	}
	// Devices that are not registered are forgotten past twice the cap.
	for i := range 10 {
		s.deviceEvent(fmt.Sprint("gone-", i), "deregistered", "")
	}
	s.devs.mu.Lock()
	n := len(s.devs.m)
	s.devs.mu.Unlock()
	if n > 2*s.MaxRegistrations {
		t.Errorf("%d device records kept, want at most %d", n, 2*s.MaxRegistrations)
	}
}

// TestInventoryBounded: Registers of many endpoints that never answer
// leave at most MaxRegistrations inventory reads waiting, one per
// endpoint however often it registers.
func TestInventoryBounded(t *testing.T) {
	s := &Server{Inventory: true, MaxRegistrations: 3}
	// Hold the reads: every slot is taken.
	s.devs.sem = make(chan struct{}, inventoryReads)
	s.devs.pending = make(map[string]bool)
	for range inventoryReads {
		s.devs.sem <- struct{}{}
	}
	for i := range 10 {
		s.startInventory(fmt.Sprint("ep-", i%5))
		s.startInventory("ep-0")
	}
	s.devs.mu.Lock()
	n := len(s.devs.pending)
	s.devs.mu.Unlock()
	if n != 3 {
		t.Errorf("%d endpoints waiting for an inventory read, want 3 (MaxRegistrations)", n)
	}
	for range inventoryReads {
		<-s.devs.sem // let them run: each fails at once, not registered
	}
	waitfor.Until(t, 10*time.Second, func() error {
		s.devs.mu.Lock()
		defer s.devs.mu.Unlock()
		if len(s.devs.pending) != 0 {
			return fmt.Errorf("%d still pending", len(s.devs.pending))
		}
		return nil
	})
}

package server

import (
	"context"
	"sync"
	"sync/atomic"
)

// Event is a hint that something an operator looks at has changed: the
// web console refetches what it names. It carries no data of its own, so
// that a lost event costs a refetch, never a wrong view.
type Event struct {
	// Kind is "device" (Endpoint's registration or firmware status
	// changed), "campaign" (ID changed), or "resync": events were lost
	// because the subscriber fell behind, so refetch everything.
	Kind     string `json:"kind"`
	Endpoint string `json:"endpoint,omitempty"`
	ID       string `json:"id,omitempty"`
	// Change says what happened to a device: registered, updated,
	// deregistered, expired, inventory (its firmware version or /5 was
	// read) or firmware (an update made progress).
	Change string `json:"change,omitempty"`
}

// subscriberBuffer is how many events a subscriber may fall behind before
// the hub drops events for it (and tells it to resync).
const subscriberBuffer = 64

// hub fans events out to subscribers. Publish never blocks: a subscriber
// whose buffer is full loses the event and is told to resync instead.
type hub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch   chan Event
	lost atomic.Bool
}

// maxEventStreams bounds the API's event streams at once: each holds a
// connection, two goroutines and a buffer, and an API client could
// otherwise open them without end.
const maxEventStreams = 256

// subscribe registers a subscriber until ctx ends.
func (h *hub) subscribe(ctx context.Context) *subscriber {
	return h.subscribeMax(ctx, 0)
}

// subscribeMax is subscribe, or nil when max (if positive) subscribers
// are there already.
func (h *hub) subscribeMax(ctx context.Context, max int) *subscriber {
	sub := &subscriber{ch: make(chan Event, subscriberBuffer)}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = make(map[*subscriber]struct{})
	}
	if max > 0 && len(h.subs) >= max {
		h.mu.Unlock()
		return nil
	}
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	context.AfterFunc(ctx, func() {
		h.mu.Lock()
		delete(h.subs, sub)
		h.mu.Unlock()
	})
	return sub
}

func (h *hub) publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		select {
		case sub.ch <- e:
		default:
			sub.lost.Store(true)
		}
	}
}

// next returns the next event, or a resync event if some were dropped
// since the last call; ok is false once ctx ends.
func (sub *subscriber) next(ctx context.Context) (e Event, ok bool) {
	// An event is dropped only while the buffer is full, so whoever
	// drains it passes here again after the drop and sees lost.
	if sub.lost.Swap(false) {
		return Event{Kind: "resync"}, true
	}
	select {
	case e := <-sub.ch:
		return e, true
	case <-ctx.Done():
		return Event{}, false
	}
}

// Subscribe calls fn with every Event the server publishes until ctx
// ends, in order, from a goroutine of its own. A slow fn never holds up
// the server: past a small buffer, events are dropped and fn receives one
// Event of Kind "resync" in their place.
func (s *Server) Subscribe(ctx context.Context, fn func(Event)) {
	sub := s.events.subscribe(ctx)
	go func() {
		for {
			e, ok := sub.next(ctx)
			if !ok {
				return
			}
			fn(e)
		}
	}()
}

// PublishEvent sends e to the subscribers, for instance a campaign engine's
// Event{Kind: "campaign", ID: id}. It never blocks.
func (s *Server) PublishEvent(e Event) { s.events.publish(e) }

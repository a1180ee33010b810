package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Queue mode (LwM2M 1.1 Core, "Queue Mode"; Transport §5.3 for the Q
// parameter): a device that registered with Q (1.1) or the binding UQ
// (1.0) listens only for a while after it last sent something, MAX_TRANSMIT_WAIT by
// default, and then sleeps until its next Update. The server holds what
// it has for the device meanwhile and sends it, in order, once the device
// is awake again.

// Errors of operations on a sleeping device.
var (
	// ErrQueueFull reports an operation refused because MaxQueued
	// operations already wait for the same sleeping device.
	ErrQueueFull = errors.New("server: too many operations queued for the sleeping device")
	// ErrQueueExpired reports an operation that waited QueueExpiry for
	// the device to wake, in vain; it was not sent.
	ErrQueueExpired = errors.New("server: the device did not wake before the queued operation expired")
)

// DefaultMaxQueued is the number of operations that may wait for one
// sleeping device when Server.MaxQueued is zero.
const DefaultMaxQueued = 32

// devQueue is what waits for one queue-mode device.
type devQueue struct {
	waiting []*queued
	busy    bool // a dequeued operation is running; the next waits for it
}

// queued is one operation waiting in a devQueue. grant is closed when it
// may run, or when it failed (err set, under Server.mu).
type queued struct {
	op    string
	grant chan struct{}
	err   error
}

func (q *devQueue) remove(w *queued) bool {
	for i, x := range q.waiting {
		if x == w {
			q.waiting = append(q.waiting[:i:i], q.waiting[i+1:]...)
			return true
		}
	}
	return false
}

// holdKey marks a context whose caller already holds ep's turn (see
// holding): the exchanges it makes do not queue again.
type holdKey struct{}

func (s *Server) maxQueued() int {
	if s.MaxQueued > 0 {
		return s.MaxQueued
	}
	return DefaultMaxQueued
}

// queueWindow is how long a queue-mode device stays reachable after it
// last sent something.
func (s *Server) queueWindow() time.Duration {
	if s.QueueWindow > 0 {
		return s.QueueWindow
	}
	return s.tx.MaxTransmitWait()
}

// queueMode reports whether a Register's parameters ask for queue mode:
// the parameter Q (LwM2M 1.1 Transport §5.3) or a binding with Q, as 1.0
// spells it ("UQ").
func queueMode(p map[string]string) bool {
	_, q := p["Q"]
	return q || strings.Contains(p["b"], "Q")
}

// awakeLocked reports whether a request to reg may go out now.
func (s *Server) awakeLocked(reg *Registration) bool {
	return !reg.Queue || s.clock().Sub(reg.LastSeen) < s.queueWindow()
}

// Asleep reports whether ep is a registered queue-mode device that has
// been silent longer than QueueWindow: operations on it wait until it
// sends its next Update.
func (s *Server) Asleep(ep string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := s.regByEPLocked(ep)
	return reg != nil && !s.awakeLocked(reg)
}

// Queued returns the number of operations waiting for ep to wake.
func (s *Server) Queued(ep string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.queues[ep]; q != nil {
		return len(q.waiting)
	}
	return 0
}

func (s *Server) regByEPLocked(ep string) *Registration {
	id, ok := s.byEP[ep]
	if !ok {
		return nil
	}
	return s.regs[id]
}

// seenLocked notes that reg's device sent something now: it is awake for
// the next queueWindow, and what waited for it starts.
func (s *Server) seenLocked(reg *Registration) {
	reg.LastSeen = s.clock()
	s.drainLocked(reg.Endpoint)
}

// seen is seenLocked for ep, without s.mu.
func (s *Server) seen(ep string) {
	s.mu.Lock()
	if reg := s.regByEPLocked(ep); reg != nil {
		s.seenLocked(reg)
	}
	s.mu.Unlock()
}

// drainLocked starts ep's first waiting operation if the device is
// awake and none is running: they run one at a time, in the order they
// came.
func (s *Server) drainLocked(ep string) {
	q := s.queues[ep]
	if q == nil || q.busy {
		return
	}
	if len(q.waiting) == 0 {
		delete(s.queues, ep)
		return
	}
	reg := s.regByEPLocked(ep)
	if reg == nil || !s.awakeLocked(reg) {
		return
	}
	w := q.waiting[0]
	q.waiting = q.waiting[1:]
	q.busy = true
	close(w.grant)
}

// next ends the running dequeued operation of ep and starts the next.
func (s *Server) next(ep string) {
	s.mu.Lock()
	if q := s.queues[ep]; q != nil {
		q.busy = false
		s.drainLocked(ep)
	}
	s.mu.Unlock()
}

// failQueueLocked fails everything waiting for ep with err: its
// registration is gone.
func (s *Server) failQueueLocked(ep string, err error) {
	q := s.queues[ep]
	if q == nil {
		return
	}
	for _, w := range q.waiting {
		w.err = err
		close(w.grant)
	}
	q.waiting = nil
	if !q.busy {
		delete(s.queues, ep)
	}
}

// hold waits until a request may be sent to ep: at once for a device
// that is not in queue mode, or awake with nothing queued before; else
// in ep's queue until the device wakes and the operations queued earlier
// ran. The wait ends with ctx (the operation is dropped), QueueExpiry
// (ErrQueueExpired), the end of the registration, or Close (ErrClosed). release, never nil
// when err is nil, must be called once the exchange is over.
func (s *Server) hold(ctx context.Context, ep, op string) (release func(), err error) {
	noop := func() {}
	if h, _ := ctx.Value(holdKey{}).(string); h == ep {
		return noop, nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	reg := s.regByEPLocked(ep)
	if reg == nil || !reg.Queue {
		s.mu.Unlock()
		return noop, nil // do reports an unknown endpoint
	}
	q := s.queues[ep]
	if q == nil && s.awakeLocked(reg) {
		s.mu.Unlock()
		return noop, nil
	}
	if q == nil {
		q = &devQueue{}
		s.queues[ep] = q
	}
	if n := len(q.waiting); n >= s.maxQueued() {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s on %s: the queue holds its limit of %d", ErrQueueFull, op, ep, n)
	}
	w := &queued{op: op, grant: make(chan struct{})}
	q.waiting = append(q.waiting, w)
	pos := len(q.waiting)
	s.drainLocked(ep)
	s.mu.Unlock()

	select {
	case <-w.grant:
	default:
		s.logger().Info("device asleep; operation queued", "ep", ep, "op", op, "position", pos)
	}
	var expired <-chan time.Time
	if d := s.QueueExpiry; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-w.grant:
		if w.err != nil {
			return nil, w.err
		}
		return func() { s.next(ep) }, nil
	case <-ctx.Done():
		err = fmt.Errorf("server: %s on %s: dropped from the queue of the sleeping device: %w", op, ep, ctx.Err())
	case <-expired:
		err = fmt.Errorf("%w: %s on %s after %s", ErrQueueExpired, op, ep, s.QueueExpiry)
	}
	s.mu.Lock()
	if !q.remove(w) && w.err == nil {
		// Its turn came as it gave up: pass the turn on.
		q.busy = false
	}
	s.drainLocked(ep) // or forget an empty queue
	s.mu.Unlock()
	s.logger().Info("queued operation dropped", "ep", ep, "op", op, "err", err)
	return nil, err
}

// holding is hold for a sequence of exchanges: they run with the
// returned context, which holds ep's turn, so that a short timeout the
// caller puts on each one counts from the wake-up, not from the queue.
func (s *Server) holding(ctx context.Context, ep, op string) (context.Context, func(), error) {
	release, err := s.hold(ctx, ep, op)
	if err != nil {
		return nil, nil, err
	}
	return context.WithValue(ctx, holdKey{}, ep), release, nil
}

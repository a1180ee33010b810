package lwm2m

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Queue mode (LwM2M 1.1 Core §6.5 "Queue Mode Operation", Transport
// §5.3 for the Q parameter): the client tells the server, at Register,
// that it is reachable only for a while after it last exchanged a
// message (Config.QueueWindow). Past that window the session closes its
// socket (over DTLS it parks the connection, see suspend) and its phase
// becomes "sleeping". It wakes for the next Registration Update the
// lifetime calls for, for a notification that became due, for Send, or
// when the application calls Client.Wake; it then opens the socket again,
// on the same port, and sends an Update first, so that the server (which
// addresses the device by where that Update came from) can deliver what
// it held back, and only then the notifications that waited.
//
// The same machinery serves offline mode (offline.go): there the socket
// is closed because the application said so, and nothing wakes the
// session but ExitOffline.

// queueGate is the part of a session that decides whether a message may
// go out now. Every outgoing notification and Send passes through enter
// and leave; while the session sleeps (or is offline) they wait in order
// of arrival and are released one by one after the waking Update.
type queueGate struct {
	mu      sync.Mutex
	last    time.Time // last exchange with the server
	asleep  bool      // the socket is closed or parked: sleeping or offline
	offline bool      // asleep because the client is offline
	gone    bool      // the registration ended; nothing more goes out
	busy    int       // messages between enter and leave
	waiters []*ticket // messages held while asleep, in arrival order
	wake    chan struct{}
	laddr   *net.UDPAddr  // the local address a UDP session sleeps on
	parked  bool          // a Transport's connection kept open, deaf, while asleep
	waking  bool          // asleep, but the waking Update is under way
	drained chan struct{} // signalled when busy drops to 0
}

// ticket is one held message. gate is closed when it may be sent (ok)
// or never will (!ok: the registration ended).
type ticket struct {
	gate     chan struct{}
	ok       bool
	released bool // taken off waiters; counted in busy if ok
}

func (g *queueGate) init() {
	g.wake = make(chan struct{}, 1)
	g.drained = make(chan struct{}, 1)
	g.last = time.Now()
}

// touch records an exchange with the server: the window starts again.
func (g *queueGate) touch() {
	g.mu.Lock()
	g.last = time.Now()
	g.mu.Unlock()
}

// signalWake asks the session loop to wake, without waiting.
func (g *queueGate) signalWake() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// errGone is enter's answer once the registration has ended.
var errGone = errors.New("lwm2m: registration ended")

// enter waits until a message may be sent on the session's connection and
// counts it as in flight until leave; the session does not sleep
// meanwhile. A message that arrives while the session sleeps wakes it.
// Offline, a Send fails with ErrOffline at once and a notification waits.
// A notification that becomes due while the session sleeps or is offline
// is dropped (errDropped) instead when the server's Notification Storing
// (/1/x/6) is false (LwM2M 1.1 Core §E.2), unless a wake is under way.
func (s *session) enter(ctx context.Context, notify bool) error {
	g := &s.gate
	g.mu.Lock()
	// Back online but not yet awake (the Update is on its way): wait.
	offline := g.offline && !g.waking && s.c.isOffline()
	switch {
	case g.gone:
		g.mu.Unlock()
		return errGone
	case !g.asleep:
		g.busy++
		g.mu.Unlock()
		return nil
	case offline && !notify:
		g.mu.Unlock()
		return ErrOffline
	case notify && !g.waking && (offline || !g.offline) && !s.storing():
		// Notification Storing false: what becomes due while the
		// session sleeps or is offline is discarded, and wakes nothing.
		g.mu.Unlock()
		return errDropped
	}
	t := &ticket{gate: make(chan struct{})}
	g.waiters = append(g.waiters, t)
	if !g.offline {
		g.signalWake()
	}
	g.mu.Unlock()
	select {
	case <-t.gate:
		if !t.ok {
			return errGone
		}
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		if t.released {
			if t.ok {
				g.leaveLocked()
			}
		} else {
			g.waiters = slices.DeleteFunc(g.waiters, func(x *ticket) bool { return x == t })
		}
		return ctx.Err()
	}
}

// errDropped is enter's answer to a notification that Notification
// Storing false discards while the session sleeps or is offline.
var errDropped = errors.New("lwm2m: notification dropped while asleep or offline (Notification Storing is false)")

// leave ends what enter began; the window starts again.
func (s *session) leave() {
	g := &s.gate
	g.mu.Lock()
	g.leaveLocked()
	g.mu.Unlock()
}

func (g *queueGate) leaveLocked() {
	g.busy--
	g.last = time.Now()
	if g.busy == 0 {
		select {
		case g.drained <- struct{}{}:
		default:
		}
	}
}

// storing reads Notification Storing When Disabled or Offline (/1/x/6).
func (s *session) storing() bool {
	v, ok := s.serverValue(serverStoring)
	return ok && v.Bool
}

// window is how long the session stays reachable after an exchange.
func (c *Client) window() time.Duration {
	if c.cfg.QueueWindow > 0 {
		return c.cfg.QueueWindow
	}
	return c.cfg.Tx.MaxTransmitWait()
}

// idleTimer returns a timer for the end of the queue-mode window, nil
// without queue mode.
func (s *session) idleTimer() *time.Timer {
	if !s.c.cfg.QueueMode {
		return nil
	}
	g := &s.gate
	g.mu.Lock()
	last := g.last
	g.mu.Unlock()
	return time.NewTimer(time.Until(last.Add(s.c.window())))
}

// trySleep puts the gate to sleep if the window has passed and nothing is
// in flight, and reports whether it did.
func (s *session) trySleep(offline bool) bool {
	if !offline && s.transferring() {
		return false
	}
	g := &s.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if !offline && (g.busy > 0 || time.Since(g.last) < s.c.window()) {
		return false
	}
	g.asleep, g.offline = true, offline
	return true
}

// release wakes the gate: the messages that waited go out one at a time,
// in the order they arrived, each after the one before has been sent;
// the ones that arrive meanwhile queue behind them.
func (s *session) release(ctx context.Context) {
	g := &s.gate
	for {
		g.mu.Lock()
		if len(g.waiters) == 0 {
			g.asleep, g.offline, g.waking = false, false, false
			g.last = time.Now()
			g.mu.Unlock()
			return
		}
		t := g.waiters[0]
		g.waiters = g.waiters[1:]
		t.released, t.ok = true, true
		g.busy++
		close(t.gate)
		g.mu.Unlock()
		// Wait for it to leave before the next goes out.
		for {
			g.mu.Lock()
			n := g.busy
			g.mu.Unlock()
			if n <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-g.drained:
			}
		}
	}
}

// endGate fails every held message and whatever comes later: the
// registration is over (a new one starts with fresh observations).
func (s *session) endGate() {
	g := &s.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gone = true
	for _, t := range g.waiters {
		t.released = true
		close(t.gate)
	}
	g.waiters = nil
}

// openGate readies the gate for a new registration.
func (s *session) openGate() {
	g := &s.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gone, g.asleep, g.offline, g.parked, g.waking = false, false, false, false, false // busy stays: every enter has its leave
	g.last = time.Now()
}

// Wake wakes every sleeping queue-mode session at once: each sends a
// Registration Update, then what waited, and stays reachable for
// Config.QueueWindow. An awake session's window starts again. Offline,
// it does nothing (ExitOffline ends that). Safe from any goroutine.
func (c *Client) Wake() {
	for _, s := range c.currentSessions() {
		s.gate.mu.Lock()
		if !s.gate.asleep {
			s.gate.last = time.Now()
		}
		s.gate.mu.Unlock()
		s.gate.signalWake()
	}
}

// suspend takes the session off the air, sleeping (queue mode) or
// offline, until something wakes it; then it sends a Registration Update
// (or Register, if the server forgot us) and releases the messages that
// waited. It returns the connection to go on with, and an error when the
// session must end (connect closes what it returns). nextUpdate is when
// the lifetime calls for an Update.
//
// Plain UDP closes its socket and binds the same port again on waking. A
// Transport (DTLS) sleeping in queue mode keeps its connection parked
// instead, answering nothing: a new handshake at every wake would cost
// more than the sleep saves, and the server's observations stay matched
// to the session. Offline, every socket is closed.
func (s *session) suspend(ctx context.Context, conn *udpclient.Conn, nextUpdate time.Time) (*udpclient.Conn, error) {
	c := s.c
	closed := false
	closeConn := func() {
		if closed {
			return
		}
		closed = true
		s.gate.setParked(false)
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && s.transport == nil {
			s.gate.mu.Lock()
			s.gate.laddr = a
			s.gate.mu.Unlock()
		}
		conn.Close()
		// The port is free only once the read loop has closed the
		// socket (within a read tick); dialBack binds it again.
		select {
		case <-conn.Done():
		case <-ctx.Done():
		}
	}
	if s.transport != nil && !c.isOffline() {
		s.gate.setParked(true)
	} else {
		closeConn()
	}
	full := false
	for {
		offline := c.isOffline()
		if offline {
			closeConn() // the radio is off
		}
		s.gate.mu.Lock()
		s.gate.offline = offline
		s.gate.mu.Unlock()
		if offline {
			s.setPhase(phaseOffline)
			c.log.Info("offline", "ssid", s.ssid)
		} else {
			s.setPhase(phaseSleeping)
			c.log.Debug("sleeping", "ssid", s.ssid, "until", nextUpdate.Format(time.TimeOnly), "parked", !closed)
		}
		var dead <-chan struct{}
		if !closed {
			dead = conn.Done()
		}
		if err := s.waitWake(ctx, offline, nextUpdate, &full, dead); err != nil {
			switch {
			case offline:
			case closed:
				s.deregisterAsleep()
			case ctx.Err() != nil:
				s.deregister(conn)
			}
			if closed {
				return nil, err
			}
			return conn, err
		}
		if !c.isOffline() {
			break
		}
	}
	s.gate.mu.Lock()
	s.gate.waking = true
	s.gate.mu.Unlock()
	s.gate.setParked(false)
	if closed {
		var err error
		if conn, err = s.redial(ctx); err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.conn = conn
		s.mu.Unlock()
		s.obs.rebind(conn)
	}
	err := s.update(ctx, conn, full)
	if errors.Is(err, errNoRegistration) {
		c.log.Info("server lost our registration while we slept; registering again", "ssid", s.ssid)
		s.setPhase(phaseRegistering)
		err = s.register(ctx, conn)
	}
	if err != nil {
		return conn, err
	}
	s.setPhase(phaseRegistered)
	c.log.Debug("awake", "ssid", s.ssid)
	s.release(ctx)
	return conn, nil
}

// offAir is connect's hook for sleeping and going offline: suspend, with
// the watch on the connection (which ends the session when it dies)
// moved to the connection suspend returns.
func (s *session) offAir(ctx context.Context, conn *udpclient.Conn, nextUpdate time.Time, stopWatch *func() bool, cancel context.CancelFunc) (*udpclient.Conn, error) {
	(*stopWatch)()
	conn, err := s.suspend(ctx, conn, nextUpdate)
	if conn != nil {
		*stopWatch = context.AfterFunc(conn.Context(), cancel)
	}
	return conn, err
}

// setParked says whether the session's connection is parked: open, but
// deaf to the server (queue mode over a Transport).
func (g *queueGate) setParked(p bool) {
	g.mu.Lock()
	g.parked = p
	g.mu.Unlock()
}

// listening is the dispatch hook: false while the connection is parked,
// so that a sleeping session answers nothing; otherwise the request
// counts as in flight, so that the session does not sleep before its
// answer is out, until the caller's leave.
func (g *queueGate) listening() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.parked {
		return false
	}
	g.busy++
	g.last = time.Now()
	return true
}

// transferring reports a block-wise write in progress: its middle blocks
// may not reach dispatch (block1Fast), and the server expects the session
// to hear the next one.
func (s *session) transferring() bool {
	s.blocks.mu.Lock()
	defer s.blocks.mu.Unlock()
	return s.blocks.cur != nil && !s.blocks.cur.done
}

// waitWake waits, with the socket closed or parked (dead is closed if
// the parked connection dies), for a reason to wake: offline,
// only the client coming back online; sleeping, the lifetime's Update, a
// wake request (Wake, a due notification, Send) or an update request
// (full is set if it asked for the object list), or the client going
// offline.
func (s *session) waitWake(ctx context.Context, offline bool, nextUpdate time.Time, full *bool, dead <-chan struct{}) error {
	if offline {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.c.onlineC():
			return nil
		}
	}
	t := time.NewTimer(time.Until(nextUpdate))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	case <-s.gate.wake:
	case r := <-s.updates:
		*full = *full || r.full
		if r.disable {
			// Disable while asleep: wake, then let the loop de-register.
			s.requestUpdate(r)
		}
	case <-s.c.offlineC():
	case <-dead:
		return errors.New("connection closed while parked")
	}
	return nil
}

// deregisterAsleep de-registers a sleeping session whose Run ends: it
// opens a socket for the purpose, best effort within deregisterTimeout.
func (s *session) deregisterAsleep() {
	ctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
	defer cancel()
	conn, err := s.dialBack(ctx)
	if err != nil {
		s.mu.Lock()
		s.location = ""
		s.mu.Unlock()
		return
	}
	defer conn.Close()
	s.deregister(conn)
}

// queueParams adds queue mode to the Register parameters: Q in LwM2M 1.1
// (Transport §5.3), the binding UQ in 1.0 (LwM2M 1.0 §5.3.1.1).
func (s *session) queueParams(q []string) []string {
	if !s.c.cfg.QueueMode {
		return q
	}
	if s.c.cfg.Version == Version10 {
		for i, p := range q {
			if p == "b=U" {
				q[i] = "b=UQ"
			}
		}
		return q
	}
	return append(q, "Q")
}

// redial opens the session's connection again after a sleep. As in
// connect, ctx ends the dial but not the connection, so that De-register
// can still go out when Run ends; connect closes it.
func (s *session) redial(ctx context.Context) (*udpclient.Conn, error) {
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, dcancel)
	conn, err := s.dialBack(dctx)
	if !stop() || err != nil {
		dcancel()
		if err == nil {
			conn.Close()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("wake: dial %s: %w", s.host, err)
	}
	context.AfterFunc(conn.Context(), dcancel)
	return conn, nil
}

// rebind moves the observations to the connection of a new socket: the
// server keeps them across a sleep (its Update tells it the new address).
func (o *observations) rebind(conn *udpclient.Conn) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ob := range o.byToken {
		ob.conn = conn
	}
}

// dialBack dials the server again after a sleep. Plain UDP binds the port
// the session slept on, so that the server's observations, which it
// matches to the address they were made from, go on (LwM2M 1.1 Transport
// §6.5 lets the address change, but then a server that does not match
// notifications by token alone loses them); if the port was taken
// meanwhile, any port will do. A Transport (DTLS) dials as at first.
func (s *session) dialBack(ctx context.Context) (*udpclient.Conn, error) {
	s.gate.mu.Lock()
	laddr := s.gate.laddr
	s.gate.mu.Unlock()
	if s.transport != nil || laddr == nil {
		return s.dial(ctx)
	}
	conn, err := dialUDPFrom(ctx, laddr, s.host, s.dispatch, s.c.cfg.Tx, s.transportError, newBlock1Fast(s))
	if err != nil && ctx.Err() == nil {
		s.c.log.Warn("cannot wake on the port slept on; the server sees a new address", "ssid", s.ssid, "port", laddr.Port, "err", err)
		return s.dial(ctx)
	}
	return conn, err
}

package lwm2m

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// A session is the client's registration with one LwM2M server: one
// Server instance (/1/x) and the Security instance (/0/y) with the same
// Short Server ID. Each has its own connection, registration, retries,
// observations and block-wise transfers, so that a server that is down
// never holds up another (LwM2M 1.1 Core §6.2: the client registers with
// every server it has an account with).
//
// The loop of a session (run, connect) goes through the phases of type
// phase: connecting, registering, then registered (updates until the
// lifetime, a Disable, the end of the connection or of the context), then
// backoff before the next connect. Queue mode and offline mode are
// further phases of this loop; Client.Servers reports the phase.
type session struct {
	c         *Client
	ssid      uint16 // Short Server ID, /1/x/0 and /0/y/10
	srvInst   uint16 // x in /1/x
	secInst   uint16 // y in /0/y
	uri       string
	host      string // host:port
	transport Transport

	mu       sync.RWMutex
	conn     *udpclient.Conn
	location string // registration location path, "" when not registered
	phase    phase

	updates        chan updateReq
	obs            *observations
	blocks         blockTransfers
	unreachableLog rateLog
	refusedLog     rateLog   // observations refused by the cap
	gate           queueGate // queue and offline modes (queue.go)
}

// phase is where a session's loop is. Queue mode and offline mode add
// theirs (a registered session that sleeps, one whose radio is off).
type phase int

const (
	phaseConnecting  phase = iota // dialling (a DTLS handshake, say)
	phaseRegistering              // sending Register, retrying on failure
	phaseRegistered               // registered: updates, requests, notifications
	phaseDisabled                 // de-registered by Disable (/1/x/4) for its timeout
	phaseBackoff                  // the connection failed; waiting to try again
	phaseStopped                  // Run has ended, or not started
	phaseSleeping                 // queue mode: registered, socket closed or parked (queue.go)
	phaseOffline                  // EnterOffline: socket closed (offline.go)
)

func (p phase) String() string {
	switch p {
	case phaseConnecting:
		return "connecting"
	case phaseRegistering:
		return "registering"
	case phaseRegistered:
		return "registered"
	case phaseDisabled:
		return "disabled"
	case phaseBackoff:
		return "backoff"
	case phaseSleeping:
		return "sleeping"
	case phaseOffline:
		return "offline"
	}
	return "stopped"
}

func (s *session) setPhase(p phase) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

func newSession(c *Client, ssid, srvInst, secInst uint16, uri, host string, t Transport) *session {
	s := &session{c: c, ssid: ssid, srvInst: srvInst, secInst: secInst, uri: uri, host: host, transport: t,
		updates: make(chan updateReq, 1)}
	s.obs = newObservations(s)
	s.gate.init()
	return s
}

// ServerStatus is one server account as Client.Servers reports it.
type ServerStatus struct {
	ShortServerID uint16
	URI           string
	// Location is the registration's location path on the server, ""
	// while not registered.
	Location string
	// Phase says what the session is doing: "connecting",
	// "registering", "registered", "sleeping" (queue mode, between
	// exchanges), "offline" (EnterOffline), "disabled", "backoff" or
	// "stopped".
	Phase string
}

// Registered reports whether the account holds a registration now.
func (s ServerStatus) Registered() bool { return s.Location != "" }

// Servers reports each LwM2M server account that Run serves, in the
// order of their Server instances.
func (c *Client) Servers() []ServerStatus {
	var out []ServerStatus
	for _, s := range c.currentSessions() {
		s.mu.RLock()
		out = append(out, ServerStatus{ShortServerID: s.ssid, URI: s.uri, Location: s.location, Phase: s.phase.String()})
		s.mu.RUnlock()
	}
	return out
}

func (c *Client) currentSessions() []*session {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.sessions
}

// sessionOf returns the session of Server instance inst.
func (c *Client) sessionOf(inst uint16) *session {
	for _, s := range c.currentSessions() {
		if s.srvInst == inst {
			return s
		}
	}
	return nil
}

// buildSessions makes one session per Server instance whose Short Server
// ID matches a Security instance that is not a bootstrap server's
// (LwM2M 1.1 Core §E.1, §E.2). An account that cannot be served (no
// transport for its scheme, a bad URI) is logged and left out: it must
// not keep the others from registering.
func (c *Client) buildSessions() []*session {
	sec, srv := c.securityObject(), c.serverObject()
	var out []*session
	for _, x := range srv.Instances() {
		v, ok := srv.Get(x, serverShortID)
		if !ok {
			continue
		}
		ssid := uint16(v.Int)
		y, ok := securityInstanceOf(sec, ssid)
		if !ok {
			c.log.Warn("server account has no Security instance; not registering", "ssid", ssid)
			continue
		}
		uriV, _ := sec.Get(y, secServerURI)
		uri := uriV.Str
		t, host, err := c.transportFor(uri, c.credentialsOf(y))
		if err != nil {
			c.log.Error("server account cannot be served; not registering", "ssid", ssid, "err", err)
			continue
		}
		out = append(out, newSession(c, ssid, x, y, uri, host, t))
	}
	return out
}

// securityInstanceOf finds the Security instance of an LwM2M server
// (Bootstrap-Server false) with Short Server ID ssid.
func securityInstanceOf(sec *Static, ssid uint16) (uint16, bool) {
	for _, y := range sec.Instances() {
		id, ok := sec.Get(y, secShortID)
		bs, _ := sec.Get(y, secBootstrap)
		if ok && uint16(id.Int) == ssid && !bs.Bool {
			return y, true
		}
	}
	return 0, false
}

// transportFor picks how to reach uri: plain UDP for coap; for other
// schemes Config.TransportFor, or Config.Transport for the account of
// Config.Server (the single-server configuration of coaps.Configure).
func (c *Client) transportFor(uri string, cr Credentials) (Transport, string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, "", fmt.Errorf("server URI: %w", err)
	}
	host := coapuri.HostPort(u)
	switch {
	case u.Scheme == "coap":
		return nil, host, nil
	case c.cfg.TransportFor != nil:
		t, err := c.cfg.TransportFor(uri, cr)
		if err != nil {
			return nil, "", fmt.Errorf("transport for %s: %w", uri, err)
		}
		return t, host, nil
	case c.cfg.Transport != nil && uri == c.cfg.Server:
		return c.cfg.Transport, host, nil
	}
	return nil, "", fmt.Errorf("%w: no transport for scheme %q (set Config.TransportFor)", ErrConfig, u.Scheme)
}

// Run registers with every LwM2M server the client has an account with
// (one session per Server instance), keeps the registrations alive and
// serves requests until ctx is done; then it de-registers from all of
// them, within about a second, and returns nil. While a server is
// unreachable its session retries with exponential backoff and logs
// every failure; it never gives up on its own, and never delays the
// other sessions. A new provisioning (bootstrap) restarts the sessions.
// Before the first registration Run takes the stored configuration, or
// bootstraps (retrying until it succeeds); it returns an error only when
// there is nothing to register with: a damaged stored configuration
// (ErrCorruptProvisioning) and no bootstrap server to replace it, or no
// server at all (ErrConfig).
func (c *Client) Run(ctx context.Context) error {
	// Bootstrap first if there is no server yet (bootstrap_run.go), and
	// again on a Trigger or when every registration fails.
	if err := c.provision(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer c.watchBootstrap(ctx)()
	// A provisioning applied before Run is in the objects already.
	select {
	case <-c.restart:
	default:
	}
	for {
		sessions := c.buildSessions()
		c.mu.Lock()
		c.sessions = sessions
		c.mu.Unlock()
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, s := range sessions {
			wg.Go(func() { s.run(sctx) })
		}
		select {
		case <-ctx.Done():
		case <-c.restart:
			c.log.Info("server accounts changed; restarting the sessions")
		}
		cancel()
		wg.Wait()
		c.mu.Lock()
		c.sessions = nil
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// run is the session's loop: connect and register, and after a failure
// back off and try again, until ctx ends.
func (s *session) run(ctx context.Context) {
	c := s.c
	backoff := c.cfg.RetryMin
	defer s.setPhase(phaseStopped)
	for {
		if s.waitOnline(ctx) != nil {
			return
		}
		start := time.Now()
		s.setPhase(phaseConnecting)
		err := s.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errDisabled) {
			// Disable (/1/x/4): off for the Disable Timeout (/1/x/5),
			// then register again on a new connection.
			s.setPhase(phaseDisabled)
			d := s.disableTimeout()
			c.log.Info("server disabled", "ssid", s.ssid, "for", d)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			backoff = c.cfg.RetryMin
			continue
		}
		s.setPhase(phaseBackoff)
		if time.Since(start) > 2*c.cfg.RetryMax {
			backoff = c.cfg.RetryMin // it worked for a long while
		}
		wait := jitter(backoff)
		c.log.Warn("server session ended, retrying", "server", s.host, "ssid", s.ssid, "err", err, "in", wait.Round(time.Millisecond), "retry_at", retryAt(wait))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.RetryMax)
	}
}

// errDisabled ends a connection on Disable (/1/x/4), after De-register.
var errDisabled = errors.New("lwm2m: disabled by the server")

// connect is one connection: register, then update until ctx ends or the
// registration is lost.
func (s *session) connect(ctx context.Context) error {
	c := s.c
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The connection outlives sctx so that De-register can still be sent
	// after the caller's context ends.
	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	// Until the connection is up, though, ctx ends the dial (a DTLS
	// handshake may take a minute).
	stopDial := context.AfterFunc(ctx, ccancel)
	conn, err := s.dial(cctx)
	if !stopDial() || err != nil {
		if err == nil {
			conn.Close()
			return ctx.Err()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.registrationFailed(s)
		return fmt.Errorf("dial %s: %w", s.host, err)
	}
	// Queue and offline modes replace conn (queue.go): the deferred
	// calls act on the current one.
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	// The dialled connection runs its own read loop; stop the session if
	// it dies (for example a DTLS alert).
	stopWatch := context.AfterFunc(conn.Context(), cancel)
	defer func() { stopWatch() }()
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	s.openGate()
	defer func() {
		s.endGate()
		s.mu.Lock()
		s.conn, s.location = nil, ""
		s.mu.Unlock()
		s.obs.reset()
	}()

	// An update request queued before registering is moot: Register
	// carries everything.
	select {
	case <-s.updates:
	default:
	}
	s.setPhase(phaseRegistering)
	if err := s.register(sctx, conn); err != nil {
		return err
	}
	s.setPhase(phaseRegistered)
	s.gate.touch()
	nextUpdate := time.Now().Add(s.updateInterval())
	for {
		timer := time.NewTimer(time.Until(nextUpdate))
		idle, idleC := s.idleTimer(), (<-chan time.Time)(nil) // nil: not in queue mode
		if idle != nil {
			idleC = idle.C
		}
		stopTimers := func() {
			timer.Stop()
			if idle != nil {
				idle.Stop()
			}
		}
		select {
		case <-idleC: // queue mode: the window has passed (queue.go)
			stopTimers()
			if !s.trySleep(false) {
				continue // an exchange since: the window starts again
			}
			conn, err = s.offAir(sctx, conn, nextUpdate, &stopWatch, cancel)
		case <-c.offlineC(): // offline.go
			stopTimers()
			s.trySleep(true)
			conn, err = s.offAir(sctx, conn, nextUpdate, &stopWatch, cancel)
		case <-s.gate.wake:
			stopTimers()
			continue // awake already (Wake touched the window)
		case <-sctx.Done():
			stopTimers()
			if ctx.Err() != nil {
				s.deregister(conn)
				return ctx.Err()
			}
			return errors.New("connection closed")
		case r := <-s.updates:
			stopTimers()
			if r.disable {
				// Closing the connection (connect's deferred calls)
				// ends the observations too: a disabled server hears
				// nothing until the client registers again (run).
				s.deregister(conn)
				return errDisabled
			}
			err = s.update(sctx, conn, r.full)
		case <-timer.C:
			stopTimers()
			err = s.update(sctx, conn, false)
		}
		if err == nil {
			s.gate.touch()
			nextUpdate = time.Now().Add(s.updateInterval())
		}
		if errors.Is(err, errNoRegistration) {
			c.log.Info("server lost our registration; registering again", "ssid", s.ssid)
			s.setPhase(phaseRegistering)
			if err := s.register(sctx, conn); err != nil {
				return err
			}
			s.setPhase(phaseRegistered)
			s.gate.touch()
			nextUpdate = time.Now().Add(s.updateInterval())
			continue
		}
		if err != nil {
			return err
		}
	}
}

// requestUpdate asks for a Registration Update, merging with one pending.
func (s *session) requestUpdate(r updateReq) {
	for {
		select {
		case s.updates <- r:
			return
		default:
		}
		select {
		case old := <-s.updates:
			r.full = r.full || old.full
			r.disable = r.disable || old.disable
		default:
		}
	}
}

// dial opens the server connection with the session's handler.
func (s *session) dial(ctx context.Context) (*udpclient.Conn, error) {
	tx := s.c.cfg.Tx
	if s.transport != nil {
		return dialTransport(ctx, s.transport, s.dispatch, tx, s.transportError)
	}
	return dialUDP(ctx, s.host, s.dispatch, tx, s.transportError, newBlock1Fast(s))
}

// transportError logs the errors of the UDP transport. An ICMP error
// (port unreachable, say) is said at Warn, at most every 30 s: a client
// that cannot reach its server should say so rather than retransmit in
// silence. It changes nothing else: retransmission decides when an
// exchange has failed (package udpsock).
func (s *session) transportError(err error) {
	if udpsock.IsAsyncError(err) {
		if ok, n := s.unreachableLog.allow(); ok {
			s.c.log.Warn("server unreachable, retransmitting", "server", s.host, "ssid", s.ssid, "err", err, "more_since_last", n)
			return
		}
	}
	s.c.log.Debug("coap", "ssid", s.ssid, "err", err)
}

// dispatch takes the server's messages: a Reset ends the observation it
// answers (RFC 7641 §3.6), requests go to handle with the session's
// Short Server ID in their context.
func (s *session) dispatch(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	c := s.c
	if !s.gate.listening() { // queue mode: asleep (queue.go)
		return
	}
	defer s.leave() // the window starts again after the answer
	if r.Type() == message.Reset {
		s.obs.resetBy(r.MessageID())
		return
	}
	if code := c.versionRefusal(r); code != 0 {
		p, _ := r.Options().Path()
		c.logRefused(r.Code(), p, code, errNotInVersion10)
		if err := w.SetResponse(code, message.TextPlain, nil); err != nil {
			c.log.Warn("cannot set response", "err", err)
		}
		return
	}
	c.handle(s, w, r)
}

// sessionKey is the context key of the session a request came from.
type sessionKey struct{}

func withSession(ctx context.Context, s *session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// ShortServerID returns the Short Server ID of the LwM2M server whose
// request ctx belongs to (LwM2M 1.1 Core §E.2, /1/x/0): objects that
// answer several servers differently, or log who asked, read it. ok is
// false outside a server's request or notification.
func ShortServerID(ctx context.Context) (uint16, bool) {
	s, ok := ctx.Value(sessionKey{}).(*session)
	if !ok {
		return 0, false
	}
	return s.ssid, true
}

// updateInterval leaves room before the lifetime ends for a full
// retransmission sequence.
func (s *session) updateInterval() time.Duration {
	lt := s.lifetime()
	margin := max(lt/10, s.c.cfg.Tx.MaxTransmitWait())
	if margin > lt/2 {
		margin = lt / 2
	}
	return lt - margin
}

// serverValue reads resource res of the session's Server instance.
func (s *session) serverValue(res uint16) (model.Value, bool) {
	return s.c.serverObject().Get(s.srvInst, res)
}

func (s *session) lifetime() time.Duration {
	if v, ok := s.serverValue(serverLifetime); ok && v.Int > 0 {
		return time.Duration(v.Int) * time.Second
	}
	return s.c.cfg.Lifetime
}

func (s *session) binding() string {
	if v, ok := s.serverValue(serverBinding); ok && v.Str != "" {
		return v.Str
	}
	return "U"
}

func (s *session) disableTimeout() time.Duration {
	if v, ok := s.serverValue(serverDisableTO); ok && v.Int > 0 {
		return time.Duration(v.Int) * time.Second
	}
	return 86400 * time.Second
}

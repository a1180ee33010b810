package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server/coaps"
)

// registerRetryAfter is the Max-Age, in seconds, of a 5.03 to a Register
// beyond MaxRegistrations.
const registerRetryAfter = 600

// maxLinks bounds a registration payload; a real object list is far smaller.
const maxLinks = 16 << 10

// handleRD serves the registration interface (LwM2M 1.1 Transport, 5.3):
// POST /rd registers, POST /rd/{id} updates, DELETE /rd/{id} de-registers.
func (s *Server) handleRD(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message, rest []string) {
	q, _ := r.Queries() // none is fine for Update and De-register
	params := map[string]string{}
	for _, kv := range q {
		k, v, _ := strings.Cut(kv, "=")
		params[k] = v
	}
	body, err := r.ReadBody()
	if err != nil || len(body) > maxLinks {
		setCode(w, codes.RequestEntityTooLarge)
		return
	}
	cc := w.Conn()
	from := peer{addr: cc.RemoteAddr().String(), local: localAddr(cc, r), secure: isSecure(cc), identity: coaps.PSKIdentity(cc)}
	switch {
	case len(rest) == 0 && r.Code() == codes.POST:
		id, code := s.register(params, string(body), from)
		if code == codes.ServiceUnavailable {
			// RFC 7252 §5.9.3.4: Max-Age says when to try again.
			_ = w.SetResponse(code, message.TextPlain, nil, coapopt.Uint(message.MaxAge, registerRetryAfter))
			return
		}
		if code != codes.Created {
			setCode(w, code)
			return
		}
		_ = w.SetResponse(codes.Created, message.TextPlain, nil,
			message.Option{ID: message.LocationPath, Value: []byte("rd")},
			message.Option{ID: message.LocationPath, Value: []byte(id)})
	case len(rest) == 1 && r.Code() == codes.POST:
		setCode(w, s.update(rest[0], params, body, from))
	case len(rest) == 1 && r.Code() == codes.DELETE:
		setCode(w, s.deregister(rest[0], from))
	case len(rest) <= 1:
		setCode(w, codes.MethodNotAllowed)
	default:
		setCode(w, codes.NotFound)
	}
}

func parseLifetime(v string) (int64, bool) {
	lt, err := strconv.ParseInt(v, 10, 64)
	return lt, err == nil && lt > 0 && lt <= 1<<32-1
}

// localAddr returns the address r was sent to. On a wildcard listener
// that is the destination address the kernel reports with the datagram:
// go-coap keys its connection to the device by it, so requests to the
// device must use it too, or the device's answers reach another
// connection than the one that waits for them.
func localAddr(cc *udpclient.Conn, r *pool.Message) string {
	la, ok := cc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return ""
	}
	if cm := r.ControlMessage(); cm != nil && len(cm.Dst) > 0 && !cm.Dst.IsMulticast() {
		return (&net.UDPAddr{IP: cm.Dst, Port: la.Port}).String()
	}
	if la.IP.IsUnspecified() {
		return ""
	}
	return la.String()
}

// newID returns a registration ID. Whoever knows it may Update a plain
// CoAP registration from anywhere (the address may change behind a
// NAT), so it has 64 random bits: 32 were within reach of a datagram
// spray over thousands of registrations.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// peer is where a registration interface request came from.
type peer struct {
	addr     string
	local    string // the server address it was sent to, "" if unknown
	secure   bool   // over DTLS
	identity string // the DTLS PSK identity
}

// owns reports whether a request from p may change reg: a registration
// made over DTLS changes only over DTLS with the same identity, so that a
// plain UDP packet cannot redirect a secure device's traffic.
func (p peer) owns(reg *Registration) bool {
	return !reg.Secure || (p.secure && p.identity == reg.PSKIdentity)
}

func (s *Server) register(p map[string]string, links string, from peer) (string, codes.Code) {
	addr := from.addr
	ep := p["ep"]
	if ep == "" {
		return "", codes.BadRequest
	}
	reg := Registration{Endpoint: ep, Lifetime: 86400, Binding: "U", Version: "1.0", Links: links, Addr: addr, Local: from.local,
		Secure: from.secure, PSKIdentity: from.identity}
	requested := reg.Lifetime
	if v, ok := p["lt"]; ok {
		lt, ok := parseLifetime(v)
		if !ok {
			return "", codes.BadRequest
		}
		requested = lt
	}
	reg.Lifetime = s.clampLifetime(ep, requested)
	if v := p["b"]; v != "" {
		reg.Binding = v
	}
	if v := p["lwm2m"]; v != "" {
		reg.Version = v
	}
	reg.Queue = queueMode(p)
	if err := validLinks(links); err != nil {
		s.logger().Warn("registration with bad links", "ep", ep, "addr", addr, "err", err)
		return "", codes.BadRequest
	}
	now := s.clock()
	reg.Registered, reg.Updated, reg.LastSeen = now, now, now
	reg.ID = newID()

	s.mu.Lock()
	if code := s.admitLocked(ep, from); code != 0 {
		s.mu.Unlock()
		return "", code
	}
	// Core 6.2.1: a new Register from a known endpoint replaces the old
	// registration.
	if old, ok := s.byEP[ep]; ok {
		oldAddr := s.regs[old].Addr
		if oldAddr != addr && !from.secure {
			// Allowed (the device may have restarted behind a NAT), but
			// it is also how a plain CoAP peer takes a name over.
			s.logger().Log(context.Background(), moveLevel(oldAddr, addr), "endpoint registered again from another address", "ep", ep, "old", oldAddr, "addr", addr)
		}
		delete(s.regs, old)
		s.trackAddrLocked(old, oldAddr, -1)
		_ = s.Store.Delete(old)
		defer s.closeStaleSession(oldAddr)
	}
	for s.regs[reg.ID] != nil {
		reg.ID = newID()
	}
	s.regs[reg.ID] = &reg
	s.byEP[ep] = reg.ID
	s.trackAddrLocked(reg.ID, reg.Addr, 1)
	// A sleeping device wakes with a Register or an Update: what waited
	// for it goes now (before the Store's write, which may take longer
	// than a short queue window).
	s.drainLocked(ep)
	err := s.Store.Put(reg)
	s.notifyLocked(reg)
	s.mu.Unlock()
	if err != nil {
		s.logger().Error("storing registration", "ep", ep, "err", err)
	}
	if requested > reg.Lifetime {
		go s.tellLifetime(reg)
	}
	s.deviceEvent(ep, "registered", fmt.Sprintf("from %s, lifetime %ds, binding %s, LwM2M %s", addr, reg.Lifetime, reg.Binding, reg.Version))
	s.logger().Info("registered", "ep", ep, "id", reg.ID, "addr", addr, "secure", reg.Secure, "identity", reg.PSKIdentity, "lt", reg.Lifetime, "b", reg.Binding, "lwm2m", reg.Version, "queue", reg.Queue, "links", links)
	return reg.ID, codes.Created
}

func (s *Server) update(id string, p map[string]string, body []byte, from peer) codes.Code {
	addr := from.addr
	s.mu.Lock()
	cur, ok := s.regs[id]
	if !ok {
		s.mu.Unlock()
		// Transport 5.3: 4.04 makes the client register again.
		s.logger().Info("update for unknown registration", "id", id, "addr", addr)
		return codes.NotFound
	}
	if !from.owns(cur) {
		s.mu.Unlock()
		s.logger().Warn("update refused: registration belongs to another DTLS identity", "ep", cur.Endpoint, "addr", addr)
		return codes.Forbidden
	}
	reg := *cur
	if v, ok := p["lt"]; ok {
		lt, ok := parseLifetime(v)
		if !ok {
			s.mu.Unlock()
			return codes.BadRequest
		}
		reg.Lifetime = s.clampLifetime(reg.Endpoint, lt)
	}
	if v := p["b"]; v != "" {
		reg.Binding = v
		if strings.HasPrefix(reg.Version, "1.0") {
			reg.Queue = strings.Contains(v, "Q") // 1.0 says queue mode in the binding
		}
	}
	if _, ok := p["Q"]; ok {
		reg.Queue = true
	}
	if len(body) > 0 {
		if err := validLinks(string(body)); err != nil {
			s.mu.Unlock()
			return codes.BadRequest
		}
		reg.Links = string(body)
	}
	// The address may change behind a NAT; the newest one is the one to use.
	if reg.Addr != addr {
		defer s.closeStaleSession(reg.Addr)
		s.trackAddrLocked(reg.ID, reg.Addr, -1)
		s.trackAddrLocked(reg.ID, addr, 1)
		if !from.secure {
			s.logger().Log(context.Background(), moveLevel(reg.Addr, addr), "registration updated from another address", "ep", reg.Endpoint, "old", reg.Addr, "addr", addr)
		}
	}
	reg.Addr = addr
	reg.Local = from.local
	reg.Updated = s.clock()
	reg.LastSeen = reg.Updated
	*cur = reg
	s.drainLocked(reg.Endpoint) // as in register
	err := s.Store.Put(reg)
	// No notifyLocked: an Update is not a restart (Core 6.2.2); the
	// device keeps its observations.
	s.mu.Unlock()
	if err != nil {
		s.logger().Error("storing registration", "ep", reg.Endpoint, "err", err)
	}
	s.deviceEvent(reg.Endpoint, "updated", fmt.Sprintf("from %s, lifetime %ds", addr, reg.Lifetime))
	s.logger().Info("registration updated", "ep", reg.Endpoint, "id", id, "addr", addr, "lt", reg.Lifetime)
	return codes.Changed
}

// admitLocked decides whether from may register ep: 0 if so, else the
// code to answer. An endpoint is bound to the DTLS identity of its first
// registration over DTLS; from then on only that identity may register
// it, and never a plain CoAP peer. A new endpoint beyond
// MaxRegistrations gets 5.03.
func (s *Server) admitLocked(ep string, from peer) codes.Code {
	bound, isBound := s.bindings[ep]
	if isBound && (!from.secure || from.identity != bound) {
		s.noisy("register refused: endpoint is bound to another DTLS identity", "ep", ep, "addr", from.addr, "secure", from.secure, "identity", from.identity)
		return codes.Forbidden
	}
	// A plain registration that predates the server's bindings (none
	// is made for it) is still only changed by its owner.
	if old, ok := s.byEP[ep]; ok && !from.owns(s.regs[old]) {
		s.noisy("register refused: endpoint is registered over DTLS with another identity", "ep", ep, "addr", from.addr, "identity", from.identity)
		return codes.Forbidden
	}
	if _, known := s.byEP[ep]; !known && len(s.regs) >= s.maxRegistrations() {
		s.noisy("register refused: registration limit reached", "ep", ep, "addr", from.addr, "max", s.maxRegistrations())
		return codes.ServiceUnavailable
	}
	if from.secure && !isBound {
		if len(s.bindings) >= s.maxRegistrations() {
			s.noisy("register refused: dtls binding limit reached", "ep", ep, "identity", from.identity, "max", s.maxRegistrations())
			return codes.ServiceUnavailable
		}
		s.bindings[ep] = from.identity
		if bs, ok := s.Store.(BindingStore); ok {
			if err := bs.PutBinding(ep, from.identity); err != nil {
				s.logger().Error("storing dtls binding", "ep", ep, "err", err)
			}
		}
		s.logger().Info("endpoint bound to dtls identity", "ep", ep, "identity", from.identity)
	}
	return 0
}

// noisy logs msg at Warn at most once a minute, and at Debug in between:
// a peer that repeats a refused request must not flood the log.
func (s *Server) noisy(msg string, args ...any) {
	now := s.clock()
	s.logMu.Lock()
	if s.warned == nil {
		s.warned = make(map[string]time.Time)
	}
	warn := now.Sub(s.warned[msg]) >= time.Minute
	if warn {
		s.warned[msg] = now
	}
	s.logMu.Unlock()
	if warn {
		s.logger().Warn(msg, args...)
		return
	}
	s.logger().Debug(msg, args...)
}

// clampLifetime caps a requested lifetime at MaxLifetime.
func (s *Server) clampLifetime(ep string, lt int64) int64 {
	if m := s.maxLifetime(); lt > m {
		s.noisy("lifetime clamped", "ep", ep, "requested", lt, "max", m)
		return m
	}
	return lt
}

// tellLifetime writes reg's clamped lifetime to the device's Server
// Object (/1/x/1, Core E.2), which makes the device send an Update with
// it, when the registration lists exactly one Server Object instance:
// with more, which one is this server's is not known. Otherwise the
// registration expires at the cap, and the device's next Update gets
// 4.04, which makes it register again (Transport 5.3).
func (s *Server) tellLifetime(reg Registration) {
	var inst []string
	for _, l := range strings.Split(reg.Links, ",") {
		t := strings.Trim(strings.TrimSpace(strings.SplitN(l, ";", 2)[0]), "<>")
		if rest, ok := strings.CutPrefix(t, "/1/"); ok && rest != "" && !strings.Contains(rest, "/") {
			inst = append(inst, rest)
		}
	}
	if len(inst) != 1 {
		s.logger().Info("lifetime clamped; the device is not told", "ep", reg.Endpoint, "server_instances", len(inst))
		return
	}
	path, err := model.ParsePath("/1/" + inst[0] + "/1")
	if err != nil {
		return
	}
	ctx, cancel := s.withTimeout(context.Background())
	defer cancel()
	// One NON datagram, smaller than the Register: a forged Register
	// must not make the server send a retransmitted request to whatever
	// address it claims (RFC 7252 §11.3). If it is lost, the device
	// registers again after the cap and is told again.
	lt := []byte(strconv.FormatInt(reg.Lifetime, 10))
	_, err = s.simple(ctx, request{op: "write", ep: reg.Endpoint, path: path, code: codes.PUT, format: content.TextPlain,
		payload: lt, accept: AnyFormat, want: codes.Changed, non: true})
	if err != nil {
		s.logger().Warn("could not write the clamped lifetime", "ep", reg.Endpoint, "path", path, "err", err)
		return
	}
	s.logger().Info("clamped lifetime written", "ep", reg.Endpoint, "path", path, "lt", reg.Lifetime)
}

func (s *Server) deregister(id string, from peer) codes.Code {
	s.mu.Lock()
	reg, ok := s.regs[id]
	if !ok {
		s.mu.Unlock()
		return codes.NotFound
	}
	if !from.owns(reg) {
		s.mu.Unlock()
		return codes.Forbidden
	}
	s.removeLocked(reg)
	s.mu.Unlock()
	s.deviceEvent(reg.Endpoint, "deregistered", "")
	s.logger().Info("deregistered", "ep", reg.Endpoint, "id", id)
	return codes.Deleted
}

// closeStaleSession closes the DTLS session with addr once no
// registration uses it any more, typically after the device restarted and
// came back in a new session from another port. Call it without s.mu.
func (s *Server) closeStaleSession(addr string) {
	s.mu.Lock()
	cc, ok := s.sessions[addr]
	for id := range s.byAddr[addr] {
		if s.regs[id].Secure {
			ok = false
		}
	}
	s.mu.Unlock()
	if ok {
		s.logger().Debug("closing stale dtls session", "addr", addr)
		// Close runs the OnClose callbacks, which take s.mu.
		go cc.Close()
	}
}

func (s *Server) removeLocked(reg *Registration) {
	delete(s.regs, reg.ID)
	s.trackAddrLocked(reg.ID, reg.Addr, -1)
	if s.byEP[reg.Endpoint] == reg.ID {
		delete(s.byEP, reg.Endpoint)
		s.failQueueLocked(reg.Endpoint, fmt.Errorf("%w: %q: its registration ended while operations waited for it", ErrNotRegistered, reg.Endpoint))
		s.sentTotal -= len(s.values[reg.Endpoint])
		delete(s.values, reg.Endpoint)
	}
	if err := s.Store.Delete(reg.ID); err != nil {
		s.logger().Error("deleting registration", "ep", reg.Endpoint, "err", err)
	}
}

// expire drops registrations whose lifetime and grace have passed at now
// (Core 6.2.1: the server removes a registration the client stopped updating).
func (s *Server) expire(now time.Time) {
	s.mu.Lock()
	var gone []Registration
	for _, r := range s.regs {
		if now.After(r.Expires().Add(s.grace())) {
			gone = append(gone, *r)
			s.removeLocked(r)
		}
	}
	s.mu.Unlock()
	for _, r := range gone {
		s.deviceEvent(r.Endpoint, "expired", "last update "+r.Updated.UTC().Format(time.RFC3339))
		s.logger().Info("registration expired", "ep", r.Endpoint, "id", r.ID, "updated", r.Updated)
	}
}

// notifyLocked tells waiters for reg.Endpoint about a Register, which
// means the device (re)started.
func (s *Server) notifyLocked(reg Registration) {
	for _, ch := range s.watchers[reg.Endpoint] {
		select {
		case ch <- reg:
		default: // the waiter polls too; never block the CoAP handler
		}
	}
}

// watch returns a channel that receives ep's Register events.
func (s *Server) watch(ep string) (<-chan Registration, func()) {
	ch := make(chan Registration, 4)
	s.mu.Lock()
	s.watchers[ep] = append(s.watchers[ep], ch)
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		ws := s.watchers[ep]
		for i, c := range ws {
			if c == ch {
				s.watchers[ep] = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
		if len(s.watchers[ep]) == 0 {
			delete(s.watchers, ep)
		}
	}
}

// Registrations returns the current registrations ordered by endpoint.
func (s *Server) Registrations() []Registration {
	s.mu.Lock()
	out := make([]Registration, 0, len(s.regs))
	for _, r := range s.regs {
		out = append(out, *r)
	}
	s.mu.Unlock()
	sortRegs(out)
	return out
}

// Registration returns the registration of endpoint ep.
func (s *Server) Registration(ep string) (Registration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.byEP[ep]
	if !ok {
		return Registration{}, false
	}
	return *s.regs[id], true
}

// moveLevel is the log level of an endpoint that moved from old to addr:
// Info when only the port changed, as every restart of a device opens a
// new socket, and Warn when the host changed, which is also how a plain
// CoAP peer takes a name over.
func moveLevel(old, addr string) slog.Level {
	a, okA := hostIP(old)
	b, okB := hostIP(addr)
	if okA && okB && a == b {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

package lwm2m

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// attributes are the notification attributes of LwM2M 1.1 Core §5.1.2 set
// by Write-Attributes on one path. A nil field is not set there.
type attributes struct {
	Pmin, Pmax *int64 // seconds
	Gt, Lt, St *float64
	// Con is LwM2M 1.2's con attribute (Core §5.1.2): true sends the
	// notifications Confirmable, false Non-confirmable; nil follows
	// Config.NonConfirmableNotifications.
	Con *bool
}

func (a attributes) empty() bool {
	return a.Pmin == nil && a.Pmax == nil && a.Gt == nil && a.Lt == nil && a.St == nil && a.Con == nil
}

// inherit fills a's unset fields from parent (resource over instance over object).
func (a attributes) inherit(parent attributes) attributes {
	if a.Pmin == nil {
		a.Pmin = parent.Pmin
	}
	if a.Pmax == nil {
		a.Pmax = parent.Pmax
	}
	if a.Gt == nil {
		a.Gt = parent.Gt
	}
	if a.Lt == nil {
		a.Lt = parent.Lt
	}
	if a.St == nil {
		a.St = parent.St
	}
	if a.Con == nil {
		a.Con = parent.Con
	}
	return a
}

// observations are one session's: each server observes for itself.
type observations struct {
	c       *Client
	s       *session
	mu      sync.Mutex
	attrs   map[model.Path]attributes
	byToken map[string]*observation
	seq     uint32
	// progress is closed, and replaced, whenever an observation has
	// finished a notification or ended: WaitNotified waits on it.
	progress chan struct{}
}

type observation struct {
	token     message.Token
	path      model.Path
	format    content.Format
	hasAccept bool
	conn      *udpclient.Conn
	changed   chan struct{}
	cancel    context.CancelFunc
	lastSent  time.Time
	lastCON   time.Time // last Confirmable notification (or the registration)
	lastValue *float64  // for gt/lt/st on a numeric resource
	lastBody  []byte

	// Under observations.mu:
	lastMID int32  // message ID of the last notification, -1 before any
	gen     uint64 // changes reported by Changed
	done    uint64 // changes whose notification has been delivered or given up
	ended   bool
}

// maxNonInterval is how long notifications may stay Non-confirmable: at
// least one in 24 hours is Confirmable, so that an observer that has gone
// away is found out (RFC 7641 §4.5).
const maxNonInterval = 24 * time.Hour

func newObservations(s *session) *observations {
	return &observations{c: s.c, s: s, attrs: make(map[model.Path]attributes), byToken: make(map[string]*observation), progress: make(chan struct{})}
}

// advanceLocked records that ob's notifications are delivered up to
// change gen, and wakes WaitNotified. o.mu is held.
func (o *observations) advanceLocked(ob *observation, gen uint64) {
	if gen > ob.done {
		ob.done = gen
	}
	close(o.progress)
	o.progress = make(chan struct{})
}

// endLocked marks ob ended and cancels it. o.mu is held.
func (o *observations) endLocked(ob *observation) {
	ob.cancel()
	ob.ended = true
	o.advanceLocked(ob, ob.gen)
}

func (o *observations) nextSeq() uint32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq = (o.seq + 1) & 0xFFFFFF // RFC 7641 §4.4: 24-bit sequence
	return o.seq
}

// effective returns the attributes in force at p, with the server's
// defaults (/1/x/2, /1/x/3 of its session) underneath.
func (o *observations) effective(p model.Path) attributes {
	o.mu.Lock()
	var a attributes
	for n := p.Len(); n >= 1; n-- {
		a = a.inherit(o.attrs[p.Truncate(n)])
	}
	o.mu.Unlock()
	var def attributes
	if v, ok := o.s.serverValue(serverPmin); ok {
		def.Pmin = &v.Int
	}
	if v, ok := o.s.serverValue(serverPmax); ok && v.Int > 0 {
		def.Pmax = &v.Int
	}
	return a.inherit(def)
}

func (o *observations) attrParams(p model.Path) []corelink.Param {
	o.mu.Lock()
	a := o.attrs[p]
	o.mu.Unlock()
	var out []corelink.Param
	addInt := func(name string, v *int64) {
		if v != nil {
			out = append(out, corelink.Param{Name: name, Value: strconv.FormatInt(*v, 10)})
		}
	}
	addFloat := func(name string, v *float64) {
		if v != nil {
			out = append(out, corelink.Param{Name: name, Value: strconv.FormatFloat(*v, 'g', -1, 64)})
		}
	}
	addInt("pmin", a.Pmin)
	addInt("pmax", a.Pmax)
	addFloat("gt", a.Gt)
	addFloat("lt", a.Lt)
	addFloat("st", a.St)
	if a.Con != nil {
		v := "0"
		if *a.Con {
			v = "1"
		}
		out = append(out, corelink.Param{Name: "con", Value: v})
	}
	return out
}

// writeAttributes serves Write-Attributes (LwM2M 1.1 Core §5.4.4). An
// attribute without a value removes it.
func (c *Client) writeAttributes(s *session, p model.Path, r *pool.Message) response {
	if p.Len() == 0 {
		return errResponse(codes.MethodNotAllowed)
	}
	if _, err := c.collect(context.Background(), p); err != nil && p.Len() < 3 {
		return errResponse(codeOf(err))
	}
	qs, err := r.Options().Queries()
	if err != nil {
		return errResponse(codes.BadRequest)
	}
	obs := s.obs
	obs.mu.Lock()
	a := obs.attrs[p]
	obs.mu.Unlock()
	for _, q := range qs {
		name, val, hasVal := strings.Cut(q, "=")
		switch name {
		case "con":
			var v *bool
			if hasVal {
				if val != "0" && val != "1" {
					return errResponse(codes.BadRequest)
				}
				b := val == "1"
				v = &b
			}
			a.Con = v
		case "epmin", "epmax":
			if c.cfg.Version == Version10 {
				return errResponse(codes.BadRequest) // LwM2M 1.1 attributes
			}
			if hasVal {
				if n, err := strconv.ParseInt(val, 10, 64); err != nil || n < 0 {
					return errResponse(codes.BadRequest)
				}
			}
			// Evaluation periods are not used by this client's
			// change-driven notifications.
		case "pmin", "pmax":
			var v *int64
			if hasVal {
				n, err := strconv.ParseInt(val, 10, 64)
				if err != nil || n < 0 {
					return errResponse(codes.BadRequest)
				}
				v = &n
			}
			if name == "pmin" {
				a.Pmin = v
			} else {
				a.Pmax = v
			}
		case "gt", "lt", "st":
			if p.Len() < 3 {
				return errResponse(codes.BadRequest) // numeric attributes belong to resources
			}
			var v *float64
			if hasVal {
				f, err := strconv.ParseFloat(val, 64)
				if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || (name == "st" && f < 0) {
					return errResponse(codes.BadRequest)
				}
				v = &f
			}
			switch name {
			case "gt":
				a.Gt = v
			case "lt":
				a.Lt = v
			case "st":
				a.St = v
			}
		default:
			return errResponse(codes.BadRequest)
		}
	}
	if a.Lt != nil && a.Gt != nil && *a.Lt >= *a.Gt {
		return errResponse(codes.BadRequest) // §5.1.2: lt must be below gt
	}
	obs.mu.Lock()
	if a.empty() {
		delete(obs.attrs, p)
	} else {
		obs.attrs[p] = a
	}
	obs.mu.Unlock()
	obs.changed(p) // let running observations pick up new periods
	return errResponse(codes.Changed)
}

// ErrTooManyObservations is logged when an observation beyond
// Config.MaxObservations is refused.
var ErrTooManyObservations = errors.New("lwm2m: too many observations")

// observe serves GET with Observe (RFC 7641): 0 registers, 1 deregisters.
// A registration with the token or the target of an existing one replaces
// it (RFC 7641 §4.1); beyond Config.MaxObservations it is refused with
// 5.03 Service Unavailable and no Observe option: the request is valid,
// the client lacks room, and a server may try again once it has
// cancelled others (RFC 7252 §5.9.3.4).
func (c *Client) observe(ctx context.Context, s *session, conn *udpclient.Conn, r *pool.Message, p model.Path, flag uint32) response {
	accept, hasAccept := acceptOf(r)
	token := r.Token()
	key := string(token)
	if flag == 1 {
		s.obs.cancelToken(key)
		return c.read(ctx, p, accept, hasAccept)
	}
	resp, recs := c.render(ctx, p, accept, hasAccept)
	if resp.code != codes.Content {
		return resp
	}
	now := time.Now()
	ob := &observation{
		token:     append(message.Token(nil), token...),
		path:      p,
		format:    resp.format,
		hasAccept: true,
		conn:      conn,
		changed:   make(chan struct{}, 1),
		lastSent:  now,
		lastCON:   now,
		lastBody:  resp.body,
		lastValue: numeric(p, recs),
		lastMID:   -1,
	}
	// The observation outlives its connection in queue and offline
	// modes (queue.go rebinds it); the session's reset ends it.
	octx, cancel := context.WithCancel(withSession(context.WithoutCancel(conn.Context()), s))
	ob.cancel = cancel
	if !s.obs.add(key, ob) {
		cancel()
		if ok, n := s.refusedLog.allow(); ok {
			c.log.Warn("observation refused", "path", p, "err", ErrTooManyObservations, "max", c.cfg.MaxObservations, "code", codes.ServiceUnavailable, "more_since_last", n)
		}
		return errResponse(codes.ServiceUnavailable)
	}
	go s.obs.run(octx, ob)
	resp.opts = append(resp.opts, coapopt.Uint(message.Observe, s.obs.nextSeq()))
	return resp
}

// add stores ob under key, replacing an observation with the same token,
// or with the same connection, target and format (RFC 7641 §4.1). It
// reports false when the cap leaves no room.
func (o *observations) add(key string, ob *observation) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, old := range o.byToken {
		if k == key || old.conn == ob.conn && old.path == ob.path && old.format == ob.format {
			o.endLocked(old)
			delete(o.byToken, k)
		}
	}
	if len(o.byToken) >= o.c.cfg.MaxObservations {
		return false
	}
	o.byToken[key] = ob
	return true
}

// numeric returns the value of a single numeric resource, for gt/lt/st.
func numeric(p model.Path, recs []model.Record) *float64 {
	if len(recs) != 1 || recs[0].Path != p {
		return nil
	}
	if f, ok := recs[0].Value.Number(); ok {
		return &f
	}
	return nil
}

func (o *observations) cancelToken(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ob, ok := o.byToken[key]; ok {
		o.endLocked(ob)
		delete(o.byToken, key)
	}
}

// drop ends ob if it is still registered (not replaced meanwhile).
func (o *observations) drop(ob *observation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if key := string(ob.token); o.byToken[key] == ob {
		o.endLocked(ob)
		delete(o.byToken, key)
	}
}

// resetBy ends the observation whose last notification had message ID
// mid: the server answered it with Reset (RFC 7641 §3.6, §4.5).
func (o *observations) resetBy(mid int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, ob := range o.byToken {
		if ob.lastMID == mid {
			o.endLocked(ob)
			delete(o.byToken, k)
			o.c.log.Info("observation cancelled by Reset", "path", ob.path)
			return
		}
	}
}

// dropBelow ends the observations of a deleted instance.
func (o *observations) dropBelow(p model.Path) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, ob := range o.byToken {
		if ob.path.Within(p) {
			o.endLocked(ob)
			delete(o.byToken, k)
		}
	}
	for q := range o.attrs {
		if q.Within(p) {
			delete(o.attrs, q)
		}
	}
}

// reset ends all observations, as a new registration does.
func (o *observations) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, ob := range o.byToken {
		o.endLocked(ob)
		delete(o.byToken, k)
	}
}

// Observations reports how many observations are active, on all servers.
func (c *Client) Observations() int {
	n := 0
	for _, s := range c.currentSessions() {
		s.obs.mu.Lock()
		n += len(s.obs.byToken)
		s.obs.mu.Unlock()
	}
	return n
}

// changed wakes the observations that overlap p.
func (o *observations) changed(p model.Path) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ob := range o.byToken {
		if ob.path.Within(p) || p.Within(ob.path) {
			ob.gen++
			select {
			case ob.changed <- struct{}{}:
			default:
			}
		}
	}
}

// WaitNotified returns once every observation of p, or of a path above or
// below it, has sent a notification of each change reported with Changed
// before the call, and that notification, if Confirmable, has been
// acknowledged or given up on after its retransmissions (RFC 7252 §4.2);
// or once the observation has ended. It returns at once when nothing
// observes p, and ctx's error if ctx ends first. Firmware Update calls it
// so that the servers hear of Updating before the upgrade starts. With
// several servers it waits for the observations of each.
func (c *Client) WaitNotified(ctx context.Context, p model.Path) error {
	for _, s := range c.currentSessions() {
		if err := s.obs.waitNotified(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

func (o *observations) waitNotified(ctx context.Context, p model.Path) error {
	o.mu.Lock()
	want := make(map[*observation]uint64)
	for _, ob := range o.byToken {
		if ob.path.Within(p) || p.Within(ob.path) {
			want[ob] = ob.gen
		}
	}
	o.mu.Unlock()
	for {
		o.mu.Lock()
		for ob, gen := range want {
			if ob.ended || ob.done >= gen {
				delete(want, ob)
			}
		}
		wake := o.progress
		o.mu.Unlock()
		if len(want) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

// run sends ob's notifications until it is cancelled: on a change no
// sooner than pmin after the last one, and at the latest pmax after it
// (LwM2M 1.1 Core §5.1.2, RFC 7641 §4.2).
func (o *observations) run(ctx context.Context, ob *observation) {
	for {
		a := o.effective(ob.path)
		var pmaxC <-chan time.Time
		var pmaxT *time.Timer
		if a.Pmax != nil && *a.Pmax > 0 {
			pmaxT = time.NewTimer(time.Until(ob.lastSent.Add(time.Duration(*a.Pmax) * time.Second)))
			pmaxC = pmaxT.C
		}
		force := false
		select {
		case <-ctx.Done():
		case <-ob.changed:
		case <-pmaxC:
			force = true
		}
		if pmaxT != nil {
			pmaxT.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		if !force && a.Pmin != nil && *a.Pmin > 0 {
			wait := time.Until(ob.lastSent.Add(time.Duration(*a.Pmin) * time.Second))
			if wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			a = o.effective(ob.path)
		}
		o.mu.Lock()
		gen := ob.gen // the rendering below covers every change up to here
		o.mu.Unlock()
		o.notify(ctx, ob, a, force)
		o.mu.Lock()
		o.advanceLocked(ob, gen)
		o.mu.Unlock()
	}
}

func (o *observations) notify(ctx context.Context, ob *observation, a attributes, force bool) {
	// Queue and offline modes: wait, rather than render a value that
	// would be stale by the time the session is awake (queue.go).
	if err := o.s.enter(ctx, true); err != nil {
		return
	}
	defer o.s.leave()
	// LwM2M 1.1 Core §7.3.2.5: no notification of what the server may
	// no longer read. (An object-level observation is filtered by render.)
	if ob.path.Len() >= 2 && !o.c.readable(ctx, ob.path.Object(), ob.path.Instance()) {
		return
	}
	resp, recs := o.c.render(ctx, ob.path, ob.format, ob.hasAccept)
	if resp.code != codes.Content {
		if resp.code == codes.NotFound {
			// The observed node is gone: tell the server and end (RFC 7641 §3.2).
			o.send(ctx, ob, resp, a)
			o.drop(ob)
		}
		return
	}
	if !force {
		if bytes.Equal(resp.body, ob.lastBody) {
			return
		}
		if v := numeric(ob.path, recs); v != nil && !crosses(a, ob.lastValue, *v) {
			return
		}
	}
	ob.lastBody = resp.body
	ob.lastValue = numeric(ob.path, recs)
	ob.lastSent = time.Now()
	o.send(ctx, ob, resp, a)
}

// crosses applies gt, lt and st (LwM2M 1.1 Core §5.1.2): with none set any
// change counts; otherwise a change counts when it crosses gt or lt, or
// moves by at least st since the last notification.
func crosses(a attributes, last *float64, v float64) bool {
	if a.Gt == nil && a.Lt == nil && a.St == nil {
		return true
	}
	if last == nil {
		return true
	}
	if a.Gt != nil && (*last <= *a.Gt) != (v <= *a.Gt) {
		return true
	}
	if a.Lt != nil && (*last < *a.Lt) != (v < *a.Lt) {
		return true
	}
	return a.St != nil && math.Abs(v-*last) >= *a.St
}

// confirmable decides a notification's type: Confirmable by default, so
// that a lost notification (a State change of /5, say) is retransmitted
// rather than waiting for pmax; Non-confirmable when Config or the con
// attribute ask, but Confirmable again once sinceCON reaches 24 h
// (RFC 7641 §4.5).
func confirmable(nonByDefault bool, attr *bool, sinceCON time.Duration) bool {
	con := !nonByDefault
	if attr != nil {
		con = *attr
	}
	return con || sinceCON >= maxNonInterval
}

func (o *observations) send(ctx context.Context, ob *observation, resp response, a attributes) {
	now := time.Now()
	con := confirmable(o.c.cfg.NonConfirmableNotifications, a.Con, now.Sub(ob.lastCON))
	// Give up when the retransmissions have (RFC 7252 §4.8.2): go-coap
	// drops an unanswered exchange without waking its writer.
	sctx, cancel := context.WithTimeout(ctx, o.c.cfg.Tx.MaxTransmitWait())
	defer cancel()
	o.mu.Lock()
	conn := ob.conn
	o.mu.Unlock()
	m := conn.AcquireMessage(sctx)
	defer conn.ReleaseMessage(m)
	m.SetCode(resp.code)
	m.SetToken(ob.token)
	mid := conn.GetMessageID()
	m.SetMessageID(mid)
	if con {
		m.SetType(message.Confirmable)
		ob.lastCON = now
	} else {
		m.SetType(message.NonConfirmable)
	}
	if resp.code == codes.Content {
		m.SetObserve(o.nextSeq())
		m.SetContentFormat(message.MediaType(resp.format))
		m.SetBody(bytes.NewReader(resp.body))
	}
	// Recorded before sending, so that a Reset that comes back at once
	// finds it.
	o.mu.Lock()
	ob.lastMID = mid
	o.mu.Unlock()
	err := conn.WriteMessage(m)
	switch {
	case err == nil:
	case con && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		// RFC 7641 §4.5: an observer that does not acknowledge a
		// Confirmable notification is no longer interested.
		o.c.log.Warn("notification not acknowledged; observation ended", "path", ob.path)
		o.drop(ob)
	default:
		o.c.log.Debug("notification not delivered", "path", ob.path, "err", err)
	}
}

package lwm2m

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Errors of the bootstrap procedure.
var (
	// ErrNoBootstrapServer: the configuration has no Security instance
	// with Bootstrap-Server true, so the client cannot bootstrap.
	ErrNoBootstrapServer = errors.New("lwm2m: no bootstrap server configured")
	// ErrBootstrapRefused: the bootstrap server answered Bootstrap-Request
	// with an error code.
	ErrBootstrapRefused = errors.New("lwm2m: bootstrap request refused")
	// ErrBootstrapTimeout: no Bootstrap-Finish within
	// Config.BootstrapTimeout of the Bootstrap-Request.
	ErrBootstrapTimeout = errors.New("lwm2m: bootstrap did not finish in time")
)

// bootstrapAccount finds the Security instance of the bootstrap server.
func bootstrapAccount(t tree) (uint16, bool) {
	for _, i := range t.instances(0) {
		if v, ok := t.value(0, i, secBootstrap); ok && v.Bool {
			return i, true
		}
	}
	return 0, false
}

// credentialsOf returns what Security instance /0/i holds for DTLS.
func credentialsOf(t tree, i uint16) Credentials {
	get := func(res uint16) []byte { v, _ := t.value(0, i, res); return v.Bytes }
	mode, _ := t.value(0, i, secMode)
	return Credentials{Mode: SecurityMode(mode.Int), PublicKeyID: get(secPublicKeyID), ServerKey: get(secServerKey), SecretKey: get(secSecretKey)}
}

// bsExchange is one bootstrap in progress: the staged configuration the
// bootstrap server works on, which nothing else sees until Finish.
type bsExchange struct {
	c      *Client
	commit func(context.Context, Provisioning, []bsOp) error

	mu       sync.Mutex
	stage    tree   // /0, /1 and /2 as the bootstrap server leaves them
	ops      []bsOp // writes and deletes of application objects, replayed at Finish
	done     bool   // Finish accepted
	finished chan Provisioning

	uri         string
	unreachable rateLog
}

// maxStagedRecords bounds the values one bootstrap may write: far more
// than a configuration of many servers with their ACLs needs.
const maxStagedRecords = 10000

// bsOp is a Bootstrap-Write or -Delete of an application object.
type bsOp struct {
	delete bool
	path   model.Path
	recs   []model.Record
}

// bootstrapOnce runs one Client-Initiated Bootstrap (LwM2M 1.1 Core §6.1,
// the Bootstrap Interface) with the bootstrap server whose Security
// instance is in from: Bootstrap-Request, then the server's Bootstrap-Write, -Read,
// -Discover and -Delete on a staged copy of from, until Bootstrap-Finish.
// Finish validates the staged configuration and calls commit with it
// (and with the writes of application objects) before it answers 2.04;
// only then does bootstrapOnce return it. A bootstrap that has not
// finished Config.BootstrapTimeout after the Bootstrap-Request ends with
// ErrBootstrapTimeout, however busy the server is meanwhile: one that
// writes forever and never finishes must not hold the device.
func (c *Client) bootstrapOnce(ctx context.Context, from Provisioning, commit func(context.Context, Provisioning, []bsOp) error) (Provisioning, error) {
	t := treeOf(from.Records)
	bs, ok := bootstrapAccount(t)
	if !ok {
		return Provisioning{}, ErrNoBootstrapServer
	}
	uriV, _ := t.value(0, bs, secServerURI)
	x := &bsExchange{c: c, commit: commit, stage: t.clone(), uri: uriV.Str,
		finished: make(chan Provisioning, 1)}

	// The connection outlives ctx by a little: see linger below.
	cctx, ccancel := context.WithCancel(context.Background())
	stopDial := context.AfterFunc(ctx, ccancel)
	conn, err := c.dialAccount(cctx, uriV.Str, credentialsOf(t, bs), x.handle, x.transportError)
	if !stopDial() || err != nil {
		ccancel()
		if err == nil {
			conn.Close()
		}
		if ctx.Err() != nil {
			return Provisioning{}, ctx.Err()
		}
		return Provisioning{}, fmt.Errorf("bootstrap server %s: %w", uriV.Str, err)
	}
	finished := false
	defer func() {
		if !finished {
			ccancel()
			conn.Close()
			return
		}
		// The bootstrap server retransmits Finish if our 2.04 is lost:
		// keep answering (from the duplicate cache) for MAX_TRANSMIT_SPAN
		// (RFC 7252 §4.8.2), or until the client stops.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		time.AfterFunc(maxTransmitSpan(c.cfg.Tx), func() { stop(); conn.Close(); ccancel() })
	}()

	q := []string{"ep=" + c.cfg.Endpoint}
	if c.cfg.Version != Version10 {
		q = append(q, "pct="+strconv.Itoa(int(c.cfg.PreferredFormat))) // LwM2M 1.1 Core §6.1, Bootstrap-Request
	}
	c.log.Info("bootstrapping", "server", uriV.Str)
	rctx, cancel := c.requestCtx(ctx)
	resp, err := conn.Post(rctx, "/bs", 0, nil, queries(q...)...) // no payload, no Content-Format
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return Provisioning{}, ctx.Err()
		}
		return Provisioning{}, fmt.Errorf("bootstrap request to %s: %w", uriV.Str, err)
	}
	if resp.Code() != codes.Changed {
		c.log.Error("bootstrap server refused Bootstrap-Request", "server", uriV.Str, "code", resp.Code(),
			"diagnostic", diagnostic(resp), "query", strings.Join(q, "&"))
		return Provisioning{}, fmt.Errorf("%w: %v", ErrBootstrapRefused, resp.Code())
	}

	timeout := c.bootstrapTimeout()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case p := <-x.finished:
			finished = true
			c.log.Info("bootstrap finished", "server", uriV.Str, "servers", len(treeOf(p.Records).instances(1)))
			return p, nil
		case <-timer.C:
			return Provisioning{}, fmt.Errorf("%w: no Bootstrap-Finish from %s within %v", ErrBootstrapTimeout, uriV.Str, timeout)
		case <-conn.Done():
			return Provisioning{}, fmt.Errorf("bootstrap server %s: connection closed", uriV.Str)
		case <-ctx.Done():
			return Provisioning{}, ctx.Err()
		}
	}
}

// maxTransmitSpan is MAX_TRANSMIT_SPAN of RFC 7252 §4.8.2.
func maxTransmitSpan(tx TxParams) time.Duration {
	tx = tx.Defaults()
	return time.Duration(float64(tx.AckTimeout) * float64(int(1)<<tx.MaxRetransmit-1) * tx.AckRandomFactor)
}

// dialAccount opens a connection to the server at uri with handler: plain
// UDP for coap://, Config.TransportFor for any other scheme.
func (c *Client) dialAccount(ctx context.Context, uri string, cr Credentials, handler udpclient.HandlerFunc, errs func(error)) (*udpclient.Conn, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("%w: server URI: %w", ErrConfig, err)
	}
	if u.Scheme == "coap" {
		return dialUDP(ctx, coapuri.HostPort(u), handler, c.cfg.Tx, errs, nil)
	}
	if c.cfg.TransportFor == nil {
		return nil, fmt.Errorf("%w: %s: no transport for scheme %q (set Config.TransportFor, for example to coaps.TransportFor)", ErrConfig, uri, u.Scheme)
	}
	t, err := c.cfg.TransportFor(uri, cr)
	if err != nil {
		return nil, err
	}
	return dialTransport(ctx, t, handler, c.cfg.Tx, errs)
}

// transportError logs the errors of the bootstrap server's connection:
// an ICMP error (port unreachable, say) at Warn, at most every 30 s.
func (x *bsExchange) transportError(err error) {
	if udpsock.IsAsyncError(err) {
		if ok, n := x.unreachable.allow(); ok {
			x.c.log.Warn("bootstrap server unreachable, retransmitting", "server", x.uri, "err", err, "more_since_last", n)
			return
		}
	}
	x.c.log.Debug("coap", "server", x.uri, "err", err)
}

func (c *Client) bootstrapTimeout() time.Duration {
	if c.cfg.BootstrapTimeout > 0 {
		return c.cfg.BootstrapTimeout
	}
	return exchangeLifetime
}

// handle serves one request of the bootstrap server.
func (x *bsExchange) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	if r.Type() == message.Reset || r.Code() < codes.GET || r.Code() > codes.IPATCH {
		return
	}
	resp := x.serve(r)
	if resp.code >= codes.BadRequest {
		p, _ := r.Options().Path()
		x.c.logRefused(r.Code(), p, resp.code, resp.reason)
	}
	var err error
	if resp.hasBody {
		err = w.SetResponse(resp.code, message.MediaType(resp.format), bytes.NewReader(resp.body), resp.opts...)
	} else {
		err = w.SetResponse(resp.code, message.TextPlain, nil, resp.opts...)
	}
	if err != nil {
		x.c.log.Warn("cannot set response", "err", err)
	}
}

func (x *bsExchange) serve(r *pool.Message) response {
	if supernumerary(r.Options()) {
		return errResponse(codes.BadOption)
	}
	ps, err := r.Options().Path()
	if errors.Is(err, message.ErrOptionNotFound) {
		ps, err = "/", nil // Bootstrap-Delete and -Discover of / carry no Uri-Path
	}
	if err != nil {
		return errResponse(codes.BadOption)
	}
	if r.Code() == codes.POST && strings.Trim(ps, "/") == "bs" {
		return x.finish(r.Context())
	}
	p, err := model.ParsePath(ps)
	if err != nil {
		return errResponse(codes.NotFound)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done {
		// The bootstrap is over: the bootstrap server may touch nothing
		// more (LwM2M 1.1 Core §E.1).
		return refusal(codes.Unauthorized, errors.New("bootstrap already finished"))
	}
	switch r.Code() {
	case codes.GET:
		if a, ok := acceptOf(r); ok && a == content.LinkFormat {
			return x.discover(p)
		}
		a, hasAccept := acceptOf(r)
		return x.read(p, a, hasAccept)
	case codes.PUT:
		return x.write(r, p)
	case codes.DELETE:
		return x.delete(p)
	}
	return refusal(codes.MethodNotAllowed, errors.New("not an operation of the Bootstrap interface"))
}

// allowed reports whether the bootstrap server may write and delete obj:
// Security, Server, Access Control, and the application objects of
// Config.BootstrapObjects.
func (x *bsExchange) allowed(obj uint16) bool {
	return obj <= 2 || slices.Contains(x.c.cfg.BootstrapObjects, obj)
}

// types resolves resource types: the core table for /0, /1 and /2, the
// application's object for the others.
func (x *bsExchange) types(p model.Path) (model.Type, bool) {
	if p.Object() <= 2 {
		return model.CoreTypes(p)
	}
	return x.c.typesOf(p)
}

// stagedSize counts the values staged: those of /0, /1 and /2 and those
// of the application objects' operations.
func (x *bsExchange) stagedSize() int {
	n := len(x.ops)
	for _, insts := range x.stage {
		for _, res := range insts {
			for _, recs := range res {
				n += len(recs)
			}
		}
	}
	for _, op := range x.ops {
		n += len(op.recs)
	}
	return n
}

// write serves Bootstrap-Write (LwM2M 1.1 Core §6.1): it creates the
// instance if needed and replaces each resource written, whether the
// resource is read-only for LwM2M servers or not.
func (x *bsExchange) write(r *pool.Message, p model.Path) response {
	if p.Len() == 0 {
		return refusal(codes.BadRequest, errors.New("Bootstrap-Write needs an object, instance or resource"))
	}
	if !x.allowed(p.Object()) {
		return refusal(codes.BadRequest, fmt.Errorf("/%d may not be written during bootstrap", p.Object()))
	}
	if p.Object() > 2 {
		if _, ok := x.c.object(p.Object()); !ok {
			return refusal(codes.NotFound, fmt.Errorf("no object /%d", p.Object()))
		}
	}
	f, ok := formatOf(r)
	if !ok {
		if p.Len() < 3 {
			return refusal(codes.BadRequest, errors.New("no Content-Format"))
		}
		f = content.TextPlain
	}
	payload, err := r.ReadBody()
	if err != nil {
		return errResponse(codes.BadRequest)
	}
	if len(payload) > x.c.cfg.MaxAssembledWrite {
		return tooLarge(&TooLargeError{Max: int64(x.c.cfg.MaxAssembledWrite)})
	}
	recs, err := content.Decode(f, p, payload, x.types)
	if err != nil {
		return refusal(codeOf(err), fmt.Errorf("cannot decode %s: %w", f, err))
	}
	for i, rec := range recs {
		if rec.Path.Len() < 3 || !rec.Path.Within(p) {
			return refusal(codes.BadRequest, fmt.Errorf("record %s outside %s", rec.Path, p))
		}
		t, ok := x.types(rec.Path.Truncate(3))
		if !ok {
			continue // an unknown resource: kept as decoded, as a write to an instance ignores it
		}
		v, err := rec.Value.Convert(t)
		if err != nil {
			return refusal(codes.BadRequest, fmt.Errorf("%s: %w", rec.Path, err))
		}
		recs[i].Value = v
	}
	// A bound on what a bootstrap may stage, so that a broken or hostile
	// bootstrap server cannot grow it without end.
	if x.stagedSize()+len(recs) > maxStagedRecords {
		return refusal(codes.RequestEntityTooLarge, fmt.Errorf("more than %d values staged by one bootstrap", maxStagedRecords))
	}
	if p.Object() > 2 {
		x.ops = append(x.ops, bsOp{path: p, recs: recs})
		return errResponse(codes.Changed)
	}
	if p.Len() >= 2 {
		x.stage.ensure(p.Object(), p.Instance())
	}
	// Each resource written is replaced whole; a write of one resource
	// instance replaces only that one.
	byRes := map[model.Path][]model.Record{}
	for _, rec := range recs {
		if _, known := model.CoreTypes(rec.Path); !known {
			continue
		}
		byRes[rec.Path.Truncate(3)] = append(byRes[rec.Path.Truncate(3)], rec)
	}
	for rp, rr := range byRes {
		res := x.stage.ensure(rp.Object(), rp.Instance())
		if p.Len() == 4 {
			kept := slices.DeleteFunc(res[rp.Resource()], func(old model.Record) bool { return old.Path == p || old.Path.Len() == 3 })
			rr = append(kept, rr...)
			sortRecords(rr)
		}
		res[rp.Resource()] = rr
	}
	return errResponse(codes.Changed)
}

// read serves Bootstrap-Read (LwM2M 1.1 Core §6.1), which only
// reaches the Server and Access Control objects: the Security object's
// keys never leave the device.
func (x *bsExchange) read(p model.Path, accept content.Format, hasAccept bool) response {
	if p.Len() == 0 || p.Object() != 1 && p.Object() != 2 {
		return refusal(codes.Unauthorized, errors.New("Bootstrap-Read reaches /1 and /2 only"))
	}
	if p.Len() >= 2 && !x.stage.has(p.Object(), p.Instance()) {
		return errResponse(codes.NotFound)
	}
	var recs []model.Record
	for _, rec := range x.stage.records(p.Object()) {
		if rec.Path.Within(p) {
			recs = append(recs, rec)
		}
	}
	if p.Len() >= 3 && len(recs) == 0 {
		return errResponse(codes.NotFound)
	}
	f := x.c.cfg.PreferredFormat
	switch {
	case hasAccept:
		f = accept
	case len(recs) == 1 && recs[0].Path == p:
		f = content.TextPlain
		if recs[0].Value.Type == model.TypeOpaque {
			f = content.Opaque
		}
	}
	body, err := content.Encode(f, p, recs)
	if err != nil {
		return refusal(codes.NotAcceptable, err)
	}
	return response{code: codes.Content, format: f, body: body, hasBody: true}
}

// discover serves Bootstrap-Discover (LwM2M 1.1 Core §6.1): the
// objects and instances, with the short server ID of each Security and
// Server instance and the URI of each Security instance, so that the
// bootstrap server finds its own account.
func (x *bsExchange) discover(p model.Path) response {
	if p.Len() > 1 {
		return refusal(codes.BadRequest, errors.New("Bootstrap-Discover takes / or an object"))
	}
	ids := x.c.objectIDs()
	for _, id := range []uint16{0, 1, 2} {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var links []corelink.Link
	if p.Len() == 0 {
		links = append(links, corelink.Link{Target: "/", Params: []corelink.Param{{Name: "lwm2m", Value: x.c.cfg.Version}}})
	} else if !slices.Contains(ids, p.Object()) {
		return errResponse(codes.NotFound)
	}
	for _, id := range ids {
		if p.Len() == 1 && id != p.Object() {
			continue
		}
		var insts []uint16
		var ver string
		if id <= 2 {
			insts = x.stage.instances(id)
		} else if o, ok := x.c.object(id); ok {
			insts = o.Instances()
			if v, ok := o.(Versioner); ok && v.Version() != "" && v.Version() != "1.0" {
				ver = v.Version()
			}
		}
		if ver != "" || len(insts) == 0 {
			l := corelink.Link{Target: model.NewPath(id).String()}
			if ver != "" {
				l.Params = append(l.Params, corelink.Param{Name: "ver", Value: ver})
			}
			links = append(links, l)
		}
		for _, i := range insts {
			l := corelink.Link{Target: model.NewPath(id, i).String()}
			switch id {
			case 0:
				if bs, _ := x.stage.value(0, i, secBootstrap); !bs.Bool {
					if v, ok := x.stage.value(0, i, secShortID); ok {
						l.Params = append(l.Params, corelink.Param{Name: "ssid", Value: strconv.FormatInt(v.Int, 10)})
					}
				}
				if v, ok := x.stage.value(0, i, secServerURI); ok {
					l.Params = append(l.Params, corelink.Param{Name: "uri", Value: v.Str})
				}
			case 1:
				if v, ok := x.stage.value(1, i, serverShortID); ok {
					l.Params = append(l.Params, corelink.Param{Name: "ssid", Value: strconv.FormatInt(v.Int, 10)})
				}
			}
			links = append(links, l)
		}
	}
	return response{code: codes.Content, format: content.LinkFormat, body: encodeDiscover(links), hasBody: true}
}

// encodeDiscover is corelink.Encode, except that uri is always quoted as
// LwM2M 1.1 Core §6.1 writes it (</0/0>;uri="coap://host:5683"),
// which parsers of bootstrap servers expect.
func encodeDiscover(links []corelink.Link) []byte {
	var b []byte
	for i, l := range links {
		if i > 0 {
			b = append(b, ',')
		}
		var uri string
		hasURI := false
		rest := l.Params[:0:0]
		for _, p := range l.Params {
			if p.Name == "uri" {
				uri, hasURI = p.Value, true
				continue
			}
			rest = append(rest, p)
		}
		b = append(b, corelink.Encode([]corelink.Link{{Target: l.Target, Params: rest}})...)
		if hasURI {
			b = append(b, `;uri="`...)
			b = append(b, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(uri)...)
			b = append(b, '"')
		}
	}
	return b
}

// delete serves Bootstrap-Delete (LwM2M 1.1 Core §6.1) of /, an
// object or an instance. The bootstrap server's own Security instance is
// never deleted, nor an object the bootstrap may not touch.
func (x *bsExchange) delete(p model.Path) response {
	if p.Len() > 2 {
		return refusal(codes.BadRequest, errors.New("Bootstrap-Delete takes /, an object or an instance"))
	}
	if p.Len() > 0 && !x.allowed(p.Object()) {
		return refusal(codes.BadRequest, fmt.Errorf("/%d may not be deleted during bootstrap", p.Object()))
	}
	isBS := func(i uint16) bool { v, _ := x.stage.value(0, i, secBootstrap); return v.Bool }
	if p.Len() == 2 && p.Object() == 0 && isBS(p.Instance()) {
		return refusal(codes.BadRequest, fmt.Errorf("%s is the bootstrap server's own account", p))
	}
	if len(x.ops) >= maxStagedRecords {
		return refusal(codes.RequestEntityTooLarge, fmt.Errorf("more than %d operations staged by one bootstrap", maxStagedRecords))
	}
	objs := []uint16{0, 1, 2}
	if p.Len() > 0 {
		objs = []uint16{p.Object()}
	}
	for _, obj := range objs {
		if obj > 2 {
			continue
		}
		for _, i := range x.stage.instances(obj) {
			if p.Len() == 2 && i != p.Instance() || obj == 0 && isBS(i) {
				continue
			}
			delete(x.stage[obj], i)
		}
	}
	if p.Len() == 0 {
		for _, obj := range x.c.cfg.BootstrapObjects {
			if obj == 3 {
				continue // the Device object's instance stays, whatever the application allows
			}
			x.ops = append(x.ops, bsOp{delete: true, path: model.NewPath(obj)})
		}
	} else if p.Object() > 2 {
		x.ops = append(x.ops, bsOp{delete: true, path: p})
	}
	return errResponse(codes.Deleted)
}

// finish serves Bootstrap-Finish (LwM2M 1.1 Core §6.1): 4.06 Not
// Acceptable with the problems as diagnostic if the staged configuration
// is inconsistent (the bootstrap server may fix it and finish again),
// 5.00 if it cannot be saved, else 2.04 once it is saved.
func (x *bsExchange) finish(ctx context.Context) response {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done {
		return errResponse(codes.Changed) // a repeated Finish
	}
	p := Provisioning{Records: x.stage.records(0, 1, 2)}
	if err := p.Validate(); err != nil {
		diag := err.Error()
		var pe *ProvisioningError
		if errors.As(err, &pe) {
			diag = pe.Diagnostic()
		}
		x.c.log.Warn("bootstrap configuration refused", "problems", diag)
		return response{code: codes.NotAcceptable, format: content.TextPlain, body: []byte(diag), hasBody: true, reason: err}
	}
	if err := x.commit(ctx, p, x.ops); err != nil {
		var pe *ProvisioningError
		if errors.As(err, &pe) {
			return response{code: codes.NotAcceptable, format: content.TextPlain, body: []byte(pe.Diagnostic()), hasBody: true, reason: err}
		}
		x.c.log.Error("cannot commit the bootstrap configuration", "err", err)
		return refusal(codes.InternalServerError, err)
	}
	x.done = true
	x.finished <- p
	return errResponse(codes.Changed)
}

// applyBootstrapOps replays the Bootstrap-Writes and -Deletes of
// application objects on the objects, in order: a write of a missing
// instance creates it. A failure names the operation; what went before
// it stays applied.
func (c *Client) applyBootstrapOps(ctx context.Context, ops []bsOp) error {
	for _, op := range ops {
		o, ok := c.object(op.path.Object())
		if !ok {
			return fmt.Errorf("%s: no such object", op.path)
		}
		if err := c.applyBootstrapOp(ctx, o, op); err != nil {
			return &ProvisioningError{Problems: []string{fmt.Sprintf("%s: %v", op.path, err)}}
		}
		c.Changed(model.NewPath(op.path.Object()))
	}
	return nil
}

func (c *Client) applyBootstrapOp(ctx context.Context, o Object, op bsOp) error {
	if op.delete {
		d, ok := o.(Deleter)
		insts := o.Instances()
		if op.path.Len() == 2 {
			insts = []uint16{op.path.Instance()}
		}
		for _, i := range slices.Clone(insts) {
			if !hasInstance(o, i) {
				continue
			}
			if !ok {
				return errors.New("the object's instances cannot be deleted")
			}
			if err := d.Delete(ctx, i); err != nil {
				return err
			}
		}
		return nil
	}
	byInst := map[uint16][]model.Record{}
	var order []uint16
	for _, r := range op.recs {
		i := r.Path.Instance()
		if _, seen := byInst[i]; !seen {
			order = append(order, i)
		}
		byInst[i] = append(byInst[i], r)
	}
	for _, i := range order {
		if !hasInstance(o, i) {
			cr, ok := o.(Creator)
			if !ok {
				return fmt.Errorf("instance %d does not exist and cannot be created", i)
			}
			if err := cr.Create(ctx, i, byInst[i]); err != nil {
				return err
			}
			continue
		}
		w, ok := o.(Writer)
		if !ok {
			return errors.New("the object cannot be written")
		}
		byRes := map[model.Path][]model.Record{}
		var resOrder []model.Path
		for _, r := range byInst[i] {
			rp := r.Path.Truncate(3)
			if op.path.Len() == 4 {
				rp = op.path
			}
			if _, seen := byRes[rp]; !seen {
				resOrder = append(resOrder, rp)
			}
			byRes[rp] = append(byRes[rp], r)
		}
		for _, rp := range resOrder {
			if err := w.Write(ctx, rp, byRes[rp]); err != nil {
				return err
			}
		}
	}
	return nil
}

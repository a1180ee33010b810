package lwm2m

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// response is what a request handler produces; handle turns it into CoAP.
type response struct {
	code    codes.Code
	format  content.Format
	body    []byte
	hasBody bool
	opts    message.Options
	reason  error // why a request is refused, for the log
}

func errResponse(code codes.Code) response { return response{code: code} }

// refusal is an answer with code, logged with its reason.
func refusal(code codes.Code, reason error) response { return response{code: code, reason: reason} }

// errAccess is the reason logged for a request the Access Control layer
// refused.
var errAccess = errors.New("no access right (Access Control, LwM2M 1.1 Core §7.3)")

// codeOf maps an error from an object, a codec or the core to its CoAP code.
func codeOf(err error) codes.Code {
	switch {
	case err == nil:
		return codes.Changed
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrUnauthorized):
		return codes.Unauthorized
	case errors.Is(err, ErrMethodNotAllowed):
		return codes.MethodNotAllowed
	case errors.Is(err, ErrNotAcceptable):
		return codes.NotAcceptable
	case errors.Is(err, ErrIncomplete):
		return codes.RequestEntityIncomplete
	case errors.Is(err, ErrTooLarge):
		return codes.RequestEntityTooLarge
	case errors.Is(err, ErrUnsupportedType), errors.Is(err, content.ErrUnsupported):
		return codes.UnsupportedMediaType
	case errors.Is(err, ErrBadRequest), errors.Is(err, model.ErrType), errors.Is(err, model.ErrPath):
		return codes.BadRequest
	case errors.Is(err, ErrInternal):
		return codes.InternalServerError
	}
	return codes.BadRequest // a decoder's complaint about the payload
}

// handle serves one request from the server. Responses and empty messages
// never reach it; go-coap matches them to our own requests.
func (c *Client) handle(s *session, w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	switch r.Code() {
	case codes.GET, codes.PUT, codes.POST, codes.DELETE, codes.FETCH, codes.IPATCH:
	default:
		return
	}
	ctx := withSession(r.Context(), s)
	resp := c.serve(ctx, s, w.Conn(), r)
	if resp.code >= codes.BadRequest {
		p, _ := r.Options().Path()
		c.logRefused(r.Code(), p, resp.code, resp.reason)
	}
	var body *bytes.Reader
	if resp.hasBody {
		body = bytes.NewReader(resp.body)
	}
	if body != nil {
		if err := w.SetResponse(resp.code, message.MediaType(resp.format), body, resp.opts...); err != nil {
			c.log.Warn("cannot set response", "err", err)
		}
		return
	}
	if err := w.SetResponse(resp.code, message.TextPlain, nil, resp.opts...); err != nil {
		c.log.Warn("cannot set response", "err", err)
	}
}

// logRefused logs a refused request with its reason: at Warn when a
// payload or a transfer failed (4.00, 4.08, 4.13, 4.15), which an
// operator must see to understand a failed push, else at Info. The first
// refusal of each code is logged, then at most one a warnEvery per code,
// counting those held back, so that a hostile peer cannot flood the log;
// the held-back ones go to Debug as "request refused again".
func (c *Client) logRefused(method codes.Code, path string, code codes.Code, reason error) {
	// "4.08" as on the wire: go-coap names some codes only by number.
	attrs := []any{"method", method, "path", path, "code", fmt.Sprintf("%d.%02d", code>>5, code&31)}
	if reason != nil {
		attrs = append(attrs, "reason", reason.Error())
	}
	ok, held := c.refused.allow(code)
	level := slog.LevelDebug
	switch {
	case !ok:
	case code == codes.BadRequest, code == codes.RequestEntityIncomplete, code == codes.RequestEntityTooLarge, code == codes.UnsupportedMediaType:
		level = slog.LevelWarn
	default:
		level = slog.LevelInfo
	}
	if !ok {
		// A message of its own, so that the repeats are easy to filter.
		c.log.Log(context.Background(), level, "request refused again", attrs...)
		return
	}
	if held > 0 {
		attrs = append(attrs, "more_since_last", held)
	}
	c.log.Log(context.Background(), level, "request refused", attrs...)
}

// refusalLog rate-limits the log of refused requests per response code.
type refusalLog struct {
	mu     sync.Mutex
	byCode map[codes.Code]*rateLog
}

func (l *refusalLog) allow(code codes.Code) (bool, int) {
	l.mu.Lock()
	r := l.byCode[code]
	if r == nil {
		if l.byCode == nil {
			l.byCode = make(map[codes.Code]*rateLog)
		}
		r = new(rateLog)
		l.byCode[code] = r
	}
	l.mu.Unlock()
	return r.allow()
}

func (c *Client) serve(ctx context.Context, s *session, conn *udpclient.Conn, r *pool.Message) response {
	if supernumerary(r.Options()) {
		return errResponse(codes.BadOption)
	}
	ps, err := r.Options().Path()
	if err != nil {
		return errResponse(codes.BadOption)
	}
	p, err := model.ParsePath(ps)
	if err != nil {
		return errResponse(codes.NotFound)
	}
	if p.Len() > 0 && p.Object() == 0 {
		// The Security object is for the bootstrap server only
		// (LwM2M 1.1 Core §E.1), whatever the method.
		return errResponse(codes.Unauthorized)
	}
	// Access control first: an object never sees a request it may not
	// serve (LwM2M 1.1 Core §7.3.2).
	deny := func(op aclOp) (response, bool) {
		if code := c.authorize(s, p, op); code != 0 {
			return refusal(code, errAccess), true
		}
		return response{}, false
	}
	switch r.Code() {
	case codes.GET:
		if accept, err := r.Options().Accept(); err == nil && content.Format(accept) == content.LinkFormat {
			if rsp, no := deny(opDiscover); no {
				return rsp
			}
			return c.discover(ctx, s, p)
		}
		if rsp, no := deny(opRead); no {
			return rsp
		}
		if obs, err := r.Options().Observe(); err == nil {
			return c.observe(ctx, s, conn, r, p, obs)
		}
		accept, hasAccept := acceptOf(r)
		return c.read(ctx, p, accept, hasAccept)
	case codes.PUT:
		if r.Options().HasOption(message.URIQuery) && !r.Options().HasOption(message.ContentFormat) {
			if rsp, no := deny(opRead); no {
				return rsp
			}
			return c.writeAttributes(s, p, r)
		}
		if rsp, no := deny(opWrite); no {
			return rsp
		}
		return c.write(ctx, s, p, r, true)
	case codes.POST:
		switch p.Len() {
		case 1:
			if rsp, no := deny(opCreate); no {
				return rsp
			}
			return c.create(ctx, s, p, r)
		case 2:
			if rsp, no := deny(opWrite); no {
				return rsp
			}
			return c.write(ctx, s, p, r, false)
		case 3:
			if rsp, no := deny(opExecute); no {
				return rsp
			}
			return c.execute(ctx, p, r)
		}
		return errResponse(codes.MethodNotAllowed)
	case codes.DELETE:
		if rsp, no := deny(opDelete); no {
			return rsp
		}
		return c.delete(ctx, p)
	}
	return errResponse(codes.MethodNotAllowed)
}

func acceptOf(r *pool.Message) (content.Format, bool) {
	a, err := r.Options().Accept()
	if err != nil {
		return 0, false
	}
	return content.Format(a), true
}

// resourceDef finds the description of the resource at p (three or four levels).
func resourceDef(o Object, p model.Path) (Resource, bool) {
	for _, r := range o.Resources(p.Instance()) {
		if r.ID == p.Resource() {
			return r, true
		}
	}
	return Resource{}, false
}

func hasInstance(o Object, inst uint16) bool {
	return slices.Contains(o.Instances(), inst)
}

// collect reads every readable value at or below p.
func (c *Client) collect(ctx context.Context, p model.Path) ([]model.Record, error) {
	if p.Len() == 0 {
		return nil, ErrMethodNotAllowed
	}
	o, ok := c.object(p.Object())
	if !ok {
		return nil, ErrNotFound
	}
	var insts []uint16
	if p.Len() >= 2 {
		if !hasInstance(o, p.Instance()) {
			return nil, ErrNotFound
		}
		insts = []uint16{p.Instance()}
	} else {
		// A whole object: the instances this server may read
		// (LwM2M 1.1 Core §7.3.2.4).
		for _, i := range o.Instances() {
			if c.readable(ctx, p.Object(), i) {
				insts = append(insts, i)
			}
		}
	}
	var out []model.Record
	for _, i := range insts {
		for _, d := range o.Resources(i) {
			if p.Len() >= 3 && d.ID != p.Resource() {
				continue
			}
			if d.Ops&OpRead == 0 {
				if p.Len() >= 3 {
					return nil, ErrMethodNotAllowed
				}
				continue
			}
			recs, err := o.Read(ctx, model.NewPath(p.Object(), i, d.ID))
			if errors.Is(err, ErrNotFound) && p.Len() < 3 {
				continue // an optional resource without a value now
			}
			if err != nil {
				return nil, err
			}
			for _, r := range recs {
				if r.Path.Within(p) {
					out = append(out, r)
				}
			}
			if p.Len() == 4 && len(out) == 0 {
				return nil, ErrNotFound
			}
		}
		if p.Len() >= 3 && len(out) == 0 {
			if _, ok := resourceDef(o, p); !ok {
				return nil, ErrNotFound
			}
		}
	}
	return out, nil
}

// formatFor picks the response format: the Accept option, or the natural one.
func (c *Client) formatFor(p model.Path, recs []model.Record, accept content.Format, hasAccept bool) content.Format {
	if hasAccept {
		return accept
	}
	if len(recs) == 1 && recs[0].Path == p && p.Len() >= 3 {
		if recs[0].Value.Type == model.TypeOpaque {
			return content.Opaque
		}
		return content.TextPlain
	}
	return c.cfg.PreferredFormat
}

func (c *Client) render(ctx context.Context, p model.Path, accept content.Format, hasAccept bool) (response, []model.Record) {
	recs, err := c.collect(ctx, p)
	if err != nil {
		return errorResponse(err), nil
	}
	f := c.formatFor(p, recs, accept, hasAccept)
	body, err := content.Encode(f, p, recs)
	if err != nil {
		c.log.Debug("cannot encode", "path", p, "format", f, "err", err)
		return errResponse(codes.NotAcceptable), nil
	}
	return response{code: codes.Content, format: f, body: body, hasBody: true}, recs
}

func (c *Client) read(ctx context.Context, p model.Path, accept content.Format, hasAccept bool) response {
	resp, _ := c.render(ctx, p, accept, hasAccept)
	return resp
}

// discover answers with the links below p and their attributes (LwM2M 1.1 Core §5.4.2).
func (c *Client) discover(ctx context.Context, s *session, p model.Path) response {
	if p.Len() == 0 || p.Len() > 3 {
		return errResponse(codes.BadRequest)
	}
	o, ok := c.object(p.Object())
	if !ok {
		return errResponse(codes.NotFound)
	}
	var links []corelink.Link
	add := func(q model.Path, extra ...corelink.Param) {
		links = append(links, corelink.Link{Target: q.String(), Params: append(s.obs.attrParams(q), extra...)})
	}
	if p.Len() == 1 {
		var ver []corelink.Param
		if v, ok := o.(Versioner); ok && v.Version() != "" && v.Version() != "1.0" {
			ver = append(ver, corelink.Param{Name: "ver", Value: v.Version()})
		}
		add(p, ver...)
	}
	insts := o.Instances()
	if p.Len() >= 2 {
		if !hasInstance(o, p.Instance()) {
			return errResponse(codes.NotFound)
		}
		insts = []uint16{p.Instance()}
	}
	found := p.Len() < 3
	for _, i := range insts {
		ip := model.NewPath(p.Object(), i)
		if p.Len() <= 2 {
			add(ip)
		}
		for _, d := range o.Resources(i) {
			if p.Len() == 3 && d.ID != p.Resource() {
				continue
			}
			found = true
			rp := ip.Append(d.ID)
			if d.Multiple {
				recs, _ := o.Read(ctx, rp)
				add(rp, corelink.Param{Name: "dim", Value: strconv.Itoa(len(recs))})
				continue
			}
			add(rp)
		}
	}
	if !found {
		return errResponse(codes.NotFound)
	}
	return response{code: codes.Content, format: content.LinkFormat, body: corelink.Encode(links), hasBody: true}
}

func formatOf(r *pool.Message) (content.Format, bool) {
	cf, err := r.Options().ContentFormat()
	if err != nil {
		return 0, false
	}
	return content.Format(cf), true
}

// typesOf resolves resource types from the objects, for TLV and text.
func (c *Client) typesOf(p model.Path) (model.Type, bool) {
	o, ok := c.object(p.Object())
	if !ok {
		return 0, false
	}
	d, ok := resourceDef(o, p)
	return d.Type, ok
}

// write serves Write (PUT replace, POST partial update), including block-wise.
func (c *Client) write(ctx context.Context, s *session, p model.Path, r *pool.Message, replace bool) response {
	o, code := c.writable(p)
	if code != 0 {
		return errResponse(code)
	}
	f, ok := formatOf(r)
	if !ok {
		if p.Len() < 3 {
			return errResponse(codes.BadRequest)
		}
		f = content.TextPlain
	}
	if r.Options().HasOption(message.Block1) {
		return s.blocks.receive(ctx, c, o, p, f, r)
	}
	payload, err := r.ReadBody()
	if err != nil {
		return errResponse(codes.BadRequest)
	}
	if _, ok := o.(StreamWriter); !ok && len(payload) > c.cfg.MaxAssembledWrite {
		// The limit of an assembled block-wise write holds for one
		// datagram too (RFC 7959 §2.9.3: 4.13 with Size1).
		return tooLarge(&TooLargeError{Max: int64(c.cfg.MaxAssembledWrite)})
	}
	return c.applyWrite(ctx, o, p, f, payload)
}

// errorResponse is the answer to err; a TooLargeError's tells the peer
// the size it may send (RFC 7959 §2.9.3, §4: Size1).
func errorResponse(err error) response {
	var tl *TooLargeError
	if errors.As(err, &tl) {
		rsp := tooLarge(tl)
		rsp.reason = err
		return rsp
	}
	return refusal(codeOf(err), err)
}

func tooLarge(tl *TooLargeError) response {
	rsp := refusal(codes.RequestEntityTooLarge, tl)
	rsp.opts = append(rsp.opts, coapopt.Uint(message.Size1, uint32(min(tl.Max, 1<<32-1))))
	return rsp
}

// writable applies the rules of a Write to p: the object, the instance
// and a writable resource must exist (LwM2M 1.1 Core §5.4.3). It returns
// the object, or the code that refuses the Write. Every block of a
// block-wise write passes them, also on the fast path.
func (c *Client) writable(p model.Path) (Object, codes.Code) {
	if p.Len() < 2 {
		return nil, codes.MethodNotAllowed
	}
	o, ok := c.object(p.Object())
	if !ok || !hasInstance(o, p.Instance()) {
		return nil, codes.NotFound
	}
	if p.Len() >= 3 {
		d, ok := resourceDef(o, p)
		if !ok {
			return nil, codes.NotFound
		}
		if d.Ops&OpWrite == 0 {
			return nil, codes.MethodNotAllowed
		}
	}
	return o, 0
}

// applyWrite decodes a complete payload and hands it to the object.
func (c *Client) applyWrite(ctx context.Context, o Object, p model.Path, f content.Format, payload []byte) response {
	w, ok := o.(Writer)
	if !ok {
		return errResponse(codes.MethodNotAllowed)
	}
	recs, err := content.Decode(f, p, payload, c.typesOf)
	if err != nil {
		return refusal(codeOf(err), fmt.Errorf("cannot decode %s: %w", f, err))
	}
	// Group by resource: each gets one Write call.
	groups := map[model.Path][]model.Record{}
	var order []model.Path
	for _, rec := range recs {
		if rec.Path.Len() < 3 {
			return errResponse(codes.BadRequest)
		}
		d, ok := resourceDef(o, rec.Path)
		if !ok {
			if p.Len() >= 3 {
				return errResponse(codes.NotFound)
			}
			continue // LwM2M 1.1 Core §5.4.3: unknown resources in an instance write are ignored
		}
		if d.Ops&OpWrite == 0 {
			return errResponse(codes.MethodNotAllowed)
		}
		v, err := rec.Value.Convert(d.Type)
		if err != nil {
			return errResponse(codes.BadRequest)
		}
		rec.Value = v
		target := rec.Path.Truncate(3)
		if p.Len() == 4 {
			target = p
		}
		if _, seen := groups[target]; !seen {
			order = append(order, target)
		}
		groups[target] = append(groups[target], rec)
	}
	for _, target := range order {
		if err := w.Write(ctx, target, groups[target]); err != nil {
			return errorResponse(err)
		}
	}
	return errResponse(codes.Changed)
}

func (c *Client) execute(ctx context.Context, p model.Path, r *pool.Message) response {
	o, ok := c.object(p.Object())
	if !ok || !hasInstance(o, p.Instance()) {
		return errResponse(codes.NotFound)
	}
	d, ok := resourceDef(o, p)
	if !ok {
		return errResponse(codes.NotFound)
	}
	x, ok := o.(Executor)
	if !ok || d.Ops&OpExecute == 0 {
		return errResponse(codes.MethodNotAllowed)
	}
	args, err := r.ReadBody()
	if err != nil || !validExecArgs(string(args)) {
		return errResponse(codes.BadRequest)
	}
	if err := x.Execute(ctx, p, string(args)); err != nil {
		return errorResponse(err)
	}
	return errResponse(codes.Changed)
}

// validExecArgs checks the Execute argument grammar of LwM2M 1.1 Core
// §5.4.5: digit ['=' "'" text "'"] separated by commas.
func validExecArgs(s string) bool {
	if s == "" {
		return true
	}
	for part := range strings.SplitSeq(s, ",") {
		name, val, hasVal := strings.Cut(part, "=")
		if len(name) != 1 || name[0] < '0' || name[0] > '9' {
			return false
		}
		if hasVal && (len(val) < 2 || val[0] != '\'' || val[len(val)-1] != '\'' || strings.ContainsRune(val[1:len(val)-1], '\'')) {
			return false
		}
	}
	return true
}

func (c *Client) create(ctx context.Context, s *session, p model.Path, r *pool.Message) response {
	o, ok := c.object(p.Object())
	if !ok {
		return errResponse(codes.NotFound)
	}
	cr, ok := o.(Creator)
	if !ok {
		return errResponse(codes.MethodNotAllowed)
	}
	f, ok := formatOf(r)
	if !ok {
		return errResponse(codes.BadRequest)
	}
	payload, err := r.ReadBody()
	if err != nil {
		return errResponse(codes.BadRequest)
	}
	recs, err := content.Decode(f, p, payload, c.typesOf)
	if err != nil {
		return errorResponse(err)
	}
	// The instance ID comes from the payload, or is the lowest free one.
	var inst uint16
	if len(recs) > 0 && recs[0].Path.Len() >= 2 {
		inst = recs[0].Path.Instance()
		for _, rec := range recs {
			if rec.Path.Len() < 3 || rec.Path.Instance() != inst {
				return errResponse(codes.BadRequest) // one instance per Create
			}
		}
	} else {
		for slices.Contains(o.Instances(), inst) {
			inst++
		}
	}
	if hasInstance(o, inst) {
		return errResponse(codes.BadRequest)
	}
	if err := cr.Create(ctx, inst, recs); err != nil {
		return errorResponse(err)
	}
	c.ownCreated(s, p.Object(), inst)
	c.Changed(model.NewPath(p.Object()))
	loc := model.NewPath(p.Object(), inst).Segments()
	opts := make(message.Options, len(loc))
	for i, s := range loc {
		opts[i] = message.Option{ID: message.LocationPath, Value: []byte(s)}
	}
	return response{code: codes.Created, opts: opts}
}

func (c *Client) delete(ctx context.Context, p model.Path) response {
	if p.Len() != 2 {
		return errResponse(codes.MethodNotAllowed)
	}
	o, ok := c.object(p.Object())
	if !ok || !hasInstance(o, p.Instance()) {
		return errResponse(codes.NotFound)
	}
	d, ok := o.(Deleter)
	if !ok {
		return errResponse(codes.MethodNotAllowed)
	}
	if err := d.Delete(ctx, p.Instance()); err != nil {
		return errorResponse(err)
	}
	c.dropACL(p.Object(), p.Instance())
	c.Changed(model.NewPath(p.Object()))
	for _, s := range c.currentSessions() {
		s.obs.dropBelow(p)
	}
	return errResponse(codes.Deleted)
}

func (c *Client) String() string { return fmt.Sprintf("lwm2m.Client(%s)", c.cfg.Endpoint) }

// supernumerary reports a critical option that may appear once but appears
// again: RFC 7252 §5.4.5 treats the extra occurrence as unrecognized, and
// an unrecognized critical option in a request gets 4.02 (§5.4.1).
func supernumerary(opts message.Options) bool {
	for i := 1; i < len(opts); i++ {
		id := opts[i].ID
		if id&1 == 1 && id == opts[i-1].ID && id != message.IfMatch && id != message.URIPath && id != message.URIQuery {
			return true
		}
	}
	return false
}

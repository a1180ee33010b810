package server

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server/coaps"
)

// DefaultMaxSentValues is the number of resources whose last sent value
// is kept per device when Server.MaxSentValues is zero.
const DefaultMaxSentValues = 1024

// maxSendSize bounds a Send payload; a device sends telemetry, not files.
const maxSendSize = 64 << 10

// defaultMaxSentTotal bounds the values kept for all devices together
// (some 40 MB): MaxSentValues times MaxRegistrations would allow far more
// to a peer that registers many names.
const defaultMaxSentTotal = 1 << 18

// SentValue is the last value a device reported for one resource with
// Send (LwM2M 1.1 Core, Information Reporting). Time is when the server
// received it: SenML times (bt, t) are not kept.
type SentValue struct {
	Path  model.Path
	Value model.Value
	Time  time.Time
}

// handleSend serves Send (POST /dp, LwM2M 1.1 Transport §5.4; Core,
// Information Reporting): SenML CBOR or SenML JSON from a registered
// device. It answers 2.04 once the values are kept, 4.04 to a peer with
// no registration, 4.03 to one whose registration belongs to a DTLS
// session it is not in, 4.00 to a malformed payload, 4.15 to another
// content format, 4.02 to a Send in blocks, and 5.03 when the server
// keeps all the values it may.
func (s *Server) handleSend(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	if r.Code() != codes.POST {
		setCode(w, codes.MethodNotAllowed)
		return
	}
	cc := w.Conn()
	from := peer{addr: cc.RemoteAddr().String(), secure: isSecure(cc), identity: coaps.PSKIdentity(cc)}
	ep, code := s.sender(from)
	if code != 0 {
		s.noisy("send refused", "addr", from.addr, "code", codeString(code))
		setCode(w, code)
		return
	}
	cf, err := r.ContentFormat()
	f := content.Format(cf)
	if err != nil || f != content.SenMLCBOR && f != content.SenMLJSON {
		setCode(w, codes.UnsupportedMediaType)
		return
	}
	if r.Options().HasOption(message.Block1) {
		// Blocks of a Send are not reassembled: Block1 is a critical
		// option this resource does not implement (RFC 7252 §5.4.1).
		_ = w.SetResponse(codes.BadOption, message.TextPlain, strings.NewReader("Block1 is not supported on /dp"))
		return
	}
	body, err := r.ReadBody()
	if err != nil || len(body) > maxSendSize {
		setCode(w, codes.RequestEntityTooLarge)
		return
	}
	recs, err := content.Decode(f, model.Path{}, body, CoreTypes)
	if err != nil {
		s.noisy("malformed send", "ep", ep, "err", err)
		// RFC 7252 §5.5.2: a short diagnostic for whoever debugs the device.
		diag := err.Error()
		if len(diag) > 128 {
			diag = diag[:128]
		}
		_ = w.SetResponse(codes.BadRequest, message.TextPlain, strings.NewReader(diag))
		return
	}
	vals, ok := s.keepValues(ep, recs)
	if !ok {
		s.noisy("send refused: the server keeps as many sent values as it may", "ep", ep)
		setCode(w, codes.ServiceUnavailable)
		return
	}
	s.seen(ep)
	setCode(w, codes.Changed)
	s.logger().Debug("send received", "ep", ep, "values", len(vals))
	if s.OnSend != nil && len(vals) > 0 {
		s.OnSend(ep, vals)
	}
}

// sender returns the endpoint whose registration the Send came from, or
// the code to refuse it with. Send carries no endpoint name: the peer's
// address (and over DTLS its session identity) names the device.
func (s *Server) sender(from peer) (string, codes.Code) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found *Registration
	code := codes.NotFound
	// The address index, not a scan of every registration: a flood of
	// Sends from unknown addresses must not hold the registry's lock
	// for long.
	for id := range s.byAddr[from.addr] {
		r := s.regs[id]
		if !from.owns(r) || r.Secure != from.secure {
			code = codes.Forbidden
			continue
		}
		if found == nil || r.Updated.After(found.Updated) {
			found = r
		}
	}
	if found == nil {
		return "", code
	}
	return found.Endpoint, 0
}

// keepValues stores recs as ep's last sent values and returns them; ok
// is false, and nothing is stored, when that would keep more values than
// the server may for all devices together.
func (s *Server) keepValues(ep string, recs []model.Record) (vals []SentValue, ok bool) {
	now := s.clock()
	limit := s.MaxSentValues
	if limit <= 0 {
		limit = DefaultMaxSentValues
	}
	out := make([]SentValue, 0, len(recs))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.regByEPLocked(ep) == nil {
		return nil, true // gone meanwhile
	}
	m := s.values[ep]
	added := 0
	for _, r := range recs {
		if _, ok := m[r.Path]; !ok {
			added++
		}
	}
	total := s.maxSentTotal
	if total <= 0 {
		total = defaultMaxSentTotal
	}
	grow := min(len(m)+added, limit) - len(m)
	if s.sentTotal+grow > total {
		return nil, false
	}
	if m == nil {
		m = make(map[model.Path]sentEntry)
		s.values[ep] = m
	}
	for _, r := range recs {
		v := SentValue{Path: r.Path, Value: r.Value, Time: now}
		if _, ok := m[r.Path]; !ok && len(m) >= limit {
			evictOldest(m)
		}
		s.sendSeq++
		m[r.Path] = sentEntry{v, s.sendSeq}
		out = append(out, v)
	}
	s.sentTotal += grow
	return out, true
}

// sentEntry is a kept value and when it came, in the order of arrival.
type sentEntry struct {
	SentValue
	seq uint64
}

// evictOldest forgets the value heard from longest ago.
func evictOldest(m map[model.Path]sentEntry) {
	var oldest sentEntry
	for _, v := range m {
		if oldest.seq == 0 || v.seq < oldest.seq {
			oldest = v
		}
	}
	delete(m, oldest.Path)
}

// Values returns the last value ep sent for each resource, ordered by
// path. An endpoint that is not registered gives ErrNotRegistered; its
// values went with its registration.
func (s *Server) Values(ep string) ([]SentValue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.regByEPLocked(ep) == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotRegistered, ep)
	}
	out := make([]SentValue, 0, len(s.values[ep]))
	for _, v := range s.values[ep] {
		out = append(out, v.SentValue)
	}
	sort.Slice(out, func(i, j int) bool { return pathLess(out[i].Path, out[j].Path) })
	return out, nil
}

// pathLess orders paths numerically, level by level.
func pathLess(a, b model.Path) bool {
	for i := 0; i < a.Len() && i < b.Len(); i++ {
		if a.ID(i) != b.ID(i) {
			return a.ID(i) < b.ID(i)
		}
	}
	return a.Len() < b.Len()
}

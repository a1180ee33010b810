package lwm2m

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// ErrRejected reports a registration the server refused with a 4.xx code
// other than 4.04; retrying the same request would not help soon.
var ErrRejected = errors.New("lwm2m: registration rejected")

// errNoRegistration is the server's 4.04 to an Update: it forgot us.
var errNoRegistration = errors.New("lwm2m: server has no registration")

// retryAt is the wall-clock time of a retry in d, for the log.
func retryAt(d time.Duration) string {
	return time.Now().Add(d).Format("15:04:05")
}

// jitter spreads retries of a fleet over [d/2, d) (RFC 7252 §4.8 style randomisation).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// registrationLinks is the CoRE link payload of Register and Update: the
// objects and instances, with ver= where not 1.0 (LwM2M 1.1 Core §6.2.1).
// The Security object is never listed.
//
// The root link </>;rt="oma.lwm2m" carries ct= only for a preferred
// format other than TLV. TLV is what a server assumes without ct
// (LwM2M 1.1 Core §6.2.1), and stock Wakaama refuses ct=11542 with 4.00:
// its parser (core/registration.c) takes only 11543, 110 and 112 there.
// The root link itself stays, with rt=, which Wakaama requires of it.
func (c *Client) registrationLinks() []byte {
	root := corelink.Link{Target: "/", Params: []corelink.Param{{Name: "rt", Value: "oma.lwm2m"}}}
	if c.cfg.PreferredFormat != content.TLV {
		root.Params = append(root.Params, corelink.Param{Name: "ct", Value: strconv.Itoa(int(c.cfg.PreferredFormat))})
	}
	links := []corelink.Link{root}
	for _, id := range c.objectIDs() {
		if id == 0 {
			continue
		}
		o, ok := c.object(id)
		if !ok {
			continue
		}
		insts := o.Instances()
		if id == 2 && len(insts) == 0 {
			continue // no Access Control: a single server, as before /2 existed
		}
		v, versioned := o.(Versioner)
		if versioned && v.Version() != "" && v.Version() != "1.0" || len(insts) == 0 {
			l := corelink.Link{Target: model.NewPath(id).String()}
			if versioned && v.Version() != "" && v.Version() != "1.0" {
				l.Params = append(l.Params, corelink.Param{Name: "ver", Value: v.Version()})
			}
			links = append(links, l)
		}
		for _, i := range insts {
			links = append(links, corelink.Link{Target: model.NewPath(id, i).String()})
		}
	}
	return corelink.Encode(links)
}

func (c *Client) requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.Tx.MaxTransmitWait())
}

func (s *session) register(ctx context.Context, conn *udpclient.Conn) error {
	c := s.c
	q := []string{
		"ep=" + c.cfg.Endpoint,
		"lt=" + strconv.FormatInt(int64(s.lifetime()/time.Second), 10),
		"lwm2m=" + c.cfg.Version,
		"b=" + s.binding(),
	}
	q = s.queueParams(q) // queue.go
	backoff := c.cfg.RetryMin
	c.log.Info("registering", "server", s.host, "ssid", s.ssid, "version", c.cfg.Version, "gives_up_in", c.cfg.Tx.MaxTransmitWait().Round(time.Millisecond))
	for {
		rctx, cancel := c.requestCtx(ctx)
		links := c.registrationLinks()
		resp, err := conn.Post(rctx, "/rd", message.AppLinkFormat, bytes.NewReader(links), queries(q...)...)
		cancel()
		if err == nil {
			code := resp.Code()
			loc, lerr := locationPath(resp.Options())
			if code == codes.Created && lerr == nil && loc != "" {
				s.mu.Lock()
				s.location = "/" + trimSlash(loc)
				s.mu.Unlock()
				c.log.Info("registered", "server", s.host, "ssid", s.ssid, "location", "/"+trimSlash(loc), "lifetime", s.lifetime())
				c.registrationSucceeded(s)
				return nil
			}
			err = fmt.Errorf("server answered %v to Register", code)
			if code >= codes.BadRequest && code < codes.InternalServerError && code != codes.NotFound {
				err = fmt.Errorf("%w: %v", ErrRejected, code)
			}
			if code >= codes.BadRequest {
				// What the server said and what it was sent: the two
				// things needed to see why (a 4.00 says little alone).
				c.log.Error("server refused Register", "server", s.host, "ssid", s.ssid, "code", code,
					"diagnostic", diagnostic(resp), "query", strings.Join(q, "&"), "links", string(links))
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.registrationFailed(s)
		wait := jitter(backoff)
		c.log.Warn("register failed", "server", s.host, "ssid", s.ssid, "err", err, "retry_in", wait.Round(time.Millisecond), "retry_at", retryAt(wait))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.RetryMax)
	}
}

// diagnostic returns the diagnostic payload of an error response
// (RFC 7252 §5.5.2), bounded so that a hostile server cannot flood the
// log; slog's handlers escape what a terminal would interpret.
func diagnostic(resp *pool.Message) string {
	body, err := resp.ReadBody()
	if err != nil || len(body) == 0 {
		return ""
	}
	const max = 256
	if len(body) > max {
		body = body[:max]
	}
	return strings.ToValidUTF8(string(body), "?")
}

// queries makes Uri-Query options.
func queries(qs ...string) message.Options {
	opts := make(message.Options, len(qs))
	for i, q := range qs {
		opts[i] = message.Option{ID: message.URIQuery, Value: []byte(q)}
	}
	return opts
}

// locationPath joins the Location-Path options of a Register response.
// Unlike go-coap's Options.LocationPath it accepts a '/' inside an option:
// some servers (lwm2m-node-lib) send "rd/5" as one option, against
// RFC 7252 §5.10.7; Update and De-register then split it into segments.
func locationPath(opts message.Options) (string, error) {
	var segs []string
	for _, o := range opts {
		if o.ID == message.LocationPath {
			segs = append(segs, string(o.Value))
		}
	}
	if len(segs) == 0 {
		return "", message.ErrOptionNotFound
	}
	return strings.Join(segs, "/"), nil
}

func trimSlash(s string) string {
	for len(s) > 0 && s[0] == '/' {
		s = s[1:]
	}
	return s
}

// update sends a Registration Update (LwM2M 1.1 Core §6.2.2). full resends
// the object list.
func (s *session) update(ctx context.Context, conn *udpclient.Conn, full bool) error {
	c := s.c
	s.mu.RLock()
	loc := s.location
	s.mu.RUnlock()
	rctx, cancel := c.requestCtx(ctx)
	defer cancel()
	opts := queries("lt=" + strconv.FormatInt(int64(s.lifetime()/time.Second), 10))
	var resp *pool.Message
	var err error
	if full {
		resp, err = conn.Post(rctx, loc, message.AppLinkFormat, bytes.NewReader(c.registrationLinks()), opts...)
	} else {
		resp, err = conn.Post(rctx, loc, 0, nil, opts...)
	}
	if err != nil {
		return fmt.Errorf("registration update: %w", err)
	}
	switch code := resp.Code(); {
	case code == codes.Changed:
		c.log.Debug("registration updated", "ssid", s.ssid, "location", loc)
		return nil
	case code == codes.NotFound:
		return errNoRegistration
	default:
		// Any other failure also means the registration cannot be trusted.
		c.log.Warn("registration update refused", "ssid", s.ssid, "code", code)
		return errNoRegistration
	}
}

// deregisterTimeout bounds De-register, so that a client asked to stop
// stops within a second even when the server is gone: one transmission
// and its answer over any link with a round trip below it. A server that
// misses it drops the registration when its lifetime ends.
const deregisterTimeout = 750 * time.Millisecond

// deregister sends De-register (LwM2M 1.1 Core §6.2.3), best effort.
func (s *session) deregister(conn *udpclient.Conn) {
	c := s.c
	s.mu.Lock()
	loc := s.location
	s.location = ""
	s.mu.Unlock()
	if loc == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(c.cfg.Tx.MaxTransmitWait(), deregisterTimeout))
	defer cancel()
	resp, err := conn.Delete(ctx, loc)
	if err != nil {
		c.log.Warn("de-register failed", "ssid", s.ssid, "err", err)
		return
	}
	c.log.Info("de-registered", "ssid", s.ssid, "code", resp.Code())
}

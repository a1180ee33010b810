package lwm2m

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Errors of Send.
var (
	// ErrSendMuted: the server's Mute Send (/1/x/23) is true, so nothing
	// was sent (LwM2M 1.1 Core §E.2).
	ErrSendMuted = errors.New("lwm2m: Send is muted for this server (/1/x/23)")
	// ErrNotRegistered: the server account has no registration now
	// (it is connecting, or backing off after a failure).
	ErrNotRegistered = errors.New("lwm2m: not registered with the server")
	// ErrNoServer: no server account has the Short Server ID asked for.
	ErrNoServer = errors.New("lwm2m: no such server account")
	// ErrNothingToSend: none of the paths has a value the server may
	// read.
	ErrNothingToSend = errors.New("lwm2m: nothing to send")
)

// serverMuteSend is /1/x/23, Mute Send (LwM2M 1.1).
const serverMuteSend = 23

// SendError is a Send the server answered with a code other than 2.xx.
type SendError struct {
	Code       codes.Code
	Diagnostic string // the server's diagnostic payload, if any
}

func (e *SendError) Error() string {
	s := fmt.Sprintf("lwm2m: server answered %d.%02d to Send", e.Code>>5, e.Code&31)
	if e.Diagnostic != "" {
		s += ": " + e.Diagnostic
	}
	return s
}

// Send reports the current values at paths (resources, instances or
// objects) to the server of the first Server instance (the lowest /1/x),
// with the Send operation of LwM2M 1.1 (Core §6.4.4: a Confirmable
// POST /dp carrying SenML CBOR, or SenML JSON when Config.SendFormat
// says so). With several servers, SendTo chooses one. See SendTo.
func (c *Client) Send(ctx context.Context, paths ...model.Path) error {
	ss := c.currentSessions()
	if len(ss) == 0 {
		return ErrNotRegistered
	}
	return c.SendTo(ctx, ss[0].ssid, paths...)
}

// SendTo reports the current values at paths to the server with Short
// Server ID ssid and returns once the server answered: nil for 2.xx, a
// *SendError with its code otherwise, or ctx's error. Only values that
// server may read are sent (the Access Control layer); if none is left,
// ErrNothingToSend. It refuses with ErrSendMuted when /1/x/23 Mute Send
// is true, with ErrConfig under LwM2M 1.0 (which has no Send), with
// ErrOffline while the client is offline, and with ErrNotRegistered while
// the session holds no registration. A sleeping queue-mode session wakes
// (Registration Update first) to send. Safe from any goroutine.
func (c *Client) SendTo(ctx context.Context, ssid uint16, paths ...model.Path) error {
	if c.cfg.Version == Version10 {
		return fmt.Errorf("%w: Send is an LwM2M 1.1 operation; the client speaks 1.0", ErrConfig)
	}
	format := c.cfg.SendFormat
	if format == 0 {
		format = content.SenMLCBOR
	}
	if format != content.SenMLCBOR && format != content.SenMLJSON {
		return fmt.Errorf("%w: Send format %d (want SenML CBOR or JSON)", ErrConfig, format)
	}
	var s *session
	for _, x := range c.currentSessions() {
		if x.ssid == ssid {
			s = x
		}
	}
	if s == nil {
		return fmt.Errorf("%w: ssid %d", ErrNoServer, ssid)
	}
	if v, ok := s.serverValue(serverMuteSend); ok && v.Bool {
		return ErrSendMuted
	}
	// Awake first, as a notification is (observe.go, notify): a client
	// that sleeps in queue mode sends the values of when it woke, not
	// of before the redial and its Update.
	if err := s.enter(ctx, false); err != nil {
		if errors.Is(err, errGone) {
			return ErrNotRegistered
		}
		return err
	}
	defer s.leave()
	body, err := c.sendPayload(withSession(ctx, s), format, paths)
	if err != nil {
		return err
	}
	s.mu.RLock()
	conn, loc := s.conn, s.location
	s.mu.RUnlock()
	if conn == nil || loc == "" {
		return ErrNotRegistered
	}
	rctx, cancel := c.requestCtx(ctx)
	defer cancel()
	start := time.Now()
	resp, err := conn.Post(rctx, "/dp", message.MediaType(format), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("lwm2m: send: %w", err)
	}
	if code := resp.Code(); code < codes.Created || code >= codes.BadRequest {
		return &SendError{Code: code, Diagnostic: diagnostic(resp)}
	}
	c.log.Debug("sent", "ssid", ssid, "paths", len(paths), "bytes", len(body), "rtt", time.Since(start).Round(time.Millisecond))
	return nil
}

// sendPayload reads paths as the server in ctx may (LwM2M 1.1 Core §7.3:
// Send reports what a Read would return) and encodes them.
func (c *Client) sendPayload(ctx context.Context, format content.Format, paths []model.Path) ([]byte, error) {
	var recs []model.Record
	for _, p := range paths {
		if p.Len() == 0 || p.Object() == 0 {
			return nil, fmt.Errorf("%w: cannot send %s", ErrMethodNotAllowed, p)
		}
		if p.Len() >= 2 && !c.readable(ctx, p.Object(), p.Instance()) {
			continue // the Access Control layer: not this server's to read
		}
		rs, err := c.collect(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("lwm2m: send %s: %w", p, err)
		}
		recs = append(recs, rs...)
	}
	if len(recs) == 0 {
		return nil, ErrNothingToSend
	}
	if format == content.SenMLJSON {
		return senml.EncodeJSON(model.Path{}, recs)
	}
	return senml.EncodeCBOR(model.Path{}, recs)
}

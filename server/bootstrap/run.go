package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// noAnswerError is an exchange the device did not answer in time.
type noAnswerError struct{ msg string }

func (e *noAnswerError) Error() string { return e.msg }

// run bootstraps the device at cc: the steps in order, then
// Bootstrap-Finish (LwM2M 1.1 Core §5.2.5, §6.1), and records the
// outcome. It ends within Timeout, or when the server closes.
// sent closes once the 2.04 to the Bootstrap-Request is sent.
func (s *Server) run(ctx context.Context, cc *udpclient.Conn, a Attempt, e Endpoint, f content.Format, sent <-chan struct{}) {
	defer func() {
		s.mu.Lock()
		delete(s.running, a.Endpoint)
		s.mu.Unlock()
		s.wg.Done()
	}()
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	var err error
	select {
	case <-sent:
	case <-cc.Context().Done():
		err = errors.New("the connection closed before the answer to the Bootstrap-Request was sent")
	case <-ctx.Done():
		err = &noAnswerError{"no request sent"}
	}
	if err == nil {
		err = s.steps(ctx, cc, &a, e, f)
	}
	a.Ended = time.Now()
	switch {
	case err == nil:
		a.Outcome = Finished
	case errors.As(err, new(*noAnswerError)):
		a.Outcome = Abandoned
		if ctx.Err() == context.Canceled {
			err = fmt.Errorf("%w: the server closed", err)
		}
	default:
		a.Outcome = Failed
	}
	if err != nil {
		a.Error = err.Error()
	}
	s.record(a)
	log := s.logger()
	attrs := []any{"ep", a.Endpoint, "peer", a.Peer, "transport", a.Transport, "identity", a.PSKIdentity,
		"outcome", a.Outcome, "steps", len(a.Steps), "duration", a.Ended.Sub(a.Started).Round(time.Millisecond)}
	if err != nil {
		log.Warn("bootstrap "+a.Outcome, append(attrs, "err", err)...)
		return
	}
	log.Info("bootstrap finished", attrs...)
}

// steps sends e's steps and then Bootstrap-Finish, appending to a.Steps
// as it goes; it stops at the first error.
func (s *Server) steps(ctx context.Context, cc *udpclient.Conn, a *Attempt, e Endpoint, f content.Format) error {
	at := "endpoints[" + strconv.Quote(a.Endpoint) + "]"
	steps, err := e.plan(at, nil)
	if err != nil {
		return err
	}
	for i, st := range steps {
		if e.Discover && !st.delete {
			// After the deletes: what is left in /0 is the device's own.
			found, err := s.discover(ctx, cc, a)
			if err != nil {
				return err
			}
			if found != nil {
				if steps, err = e.plan(at, found); err != nil {
					return err
				}
			}
			e.Discover = false
		}
		st = steps[i]
		if st.delete {
			// Bootstrap-Delete: 2.02 Deleted (Core §5.2.7.5). A 4.04
			// means nothing was there to delete.
			_, err := s.exchange(ctx, cc, a, Step{Op: "delete", Path: st.path.String()}, codes.DELETE, nil, 0, codes.Deleted, codes.NotFound)
			if err != nil {
				return err
			}
			continue
		}
		payload, err := content.Encode(f, st.path, st.recs)
		if err != nil {
			return fmt.Errorf("encoding %s in %s: %w", st.path, f, err)
		}
		// Bootstrap-Write: PUT, 2.04 Changed (Core §5.2.7.4).
		_, err = s.exchange(ctx, cc, a, Step{Op: "write", Path: st.path.String(), What: st.what}, codes.PUT, payload, f, codes.Changed)
		if err != nil {
			return err
		}
	}
	// Bootstrap-Finish: POST /bs, 2.04; 4.06 when the device finds the
	// configuration inconsistent (Core §5.2.7.6).
	_, err = s.exchange(ctx, cc, a, Step{Op: "finish", Path: "/bs"}, codes.POST, nil, 0, codes.Changed)
	return err
}

// discover sends Bootstrap-Discover of /0 and returns the Security
// instances the device lists; nil, without an error, when the device
// refuses it (LwM2M 1.0 has no Bootstrap-Discover).
func (s *Server) discover(ctx context.Context, cc *udpclient.Conn, a *Attempt) (map[int]bool, error) {
	resp, err := s.exchange(ctx, cc, a, Step{Op: "discover", Path: "/0"}, codes.GET, nil, content.LinkFormat, codes.Content)
	var ce *codeError
	if errors.As(err, &ce) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// A 1.1 answer starts with the version, lwm2m="1.1", which is no
	// link (Core §5.2.7.3).
	if rest, ok := bytes.CutPrefix(bytes.TrimSpace(resp), []byte("lwm2m=")); ok {
		_, resp, _ = bytes.Cut(rest, []byte(","))
	}
	links, err := corelink.Parse(resp)
	if err != nil {
		a.Steps[len(a.Steps)-1].What = "links not understood"
		return nil, nil
	}
	found := map[int]bool{}
	var ids []string
	for _, l := range links {
		p, err := model.ParsePath(l.Target)
		if err == nil && p.Len() == 2 && p.Object() == 0 {
			found[int(p.Instance())] = true
			ids = append(ids, p.String())
		}
	}
	a.Steps[len(a.Steps)-1].What = "kept " + strings.Join(ids, " ")
	if len(ids) == 0 {
		a.Steps[len(a.Steps)-1].What = "no Security instance left"
	}
	return found, nil
}

// codeError is a device's answer other than the one expected.
type codeError struct{ msg string }

func (e *codeError) Error() string { return e.msg }

// exchange sends one request and records it as st; ok are the codes
// that count as success. A GET asks for format f (Accept), any other
// request carries payload in f. It returns the answer's payload.
func (s *Server) exchange(ctx context.Context, cc *udpclient.Conn, a *Attempt, st Step, method codes.Code, payload []byte, f content.Format, ok ...codes.Code) ([]byte, error) {
	rctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	req := cc.AcquireMessage(rctx)
	defer cc.ReleaseMessage(req)
	token, err := cc.GetToken()
	if err != nil {
		return nil, err
	}
	req.SetCode(method)
	req.SetToken(token)
	req.SetType(message.Confirmable)
	req.SetMessageID(cc.GetMessageID())
	if err := req.SetPath(st.Path); err != nil {
		return nil, err
	}
	if strings.Trim(st.Path, "/") == "" {
		req.Remove(message.URIPath) // Bootstrap-Delete of "/"
	}
	switch {
	case method == codes.GET:
		req.SetAccept(message.MediaType(f))
	case payload != nil:
		req.SetContentFormat(message.MediaType(f))
		req.SetBody(bytes.NewReader(payload))
	}
	resp, err := cc.Do(req)
	if err != nil {
		a.Steps = append(a.Steps, st)
		if rctx.Err() != nil {
			return nil, &noAnswerError{fmt.Sprintf("%s %s: the device did not answer", st.Op, st.Path)}
		}
		return nil, fmt.Errorf("%s %s: %w", st.Op, st.Path, err)
	}
	defer cc.ReleaseMessage(resp)
	st.Code = codeString(resp.Code())
	if resp.Type() == message.Reset {
		st.Code = "RST" // RFC 7252 §4.2: the device rejected the message
	}
	a.Steps = append(a.Steps, st)
	body, _ := resp.ReadBody()
	for _, c := range ok {
		if resp.Code() == c {
			return body, nil
		}
	}
	msg := fmt.Sprintf("%s %s: the device answered %s", st.Op, st.Path, st.Code)
	if d := diagnostic(body); d != "" {
		msg += ": " + d
	}
	return nil, &codeError{msg}
}

// diagnostic returns a response's diagnostic payload (RFC 7252 §5.5.2),
// shortened and stripped of control characters.
func diagnostic(b []byte) string {
	if len(b) > 256 {
		b = b[:256]
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, string(b))
}

package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

// noAnswerError is an exchange the device did not answer in time.
type noAnswerError struct{ msg string }

func (e *noAnswerError) Error() string { return e.msg }

// run bootstraps the device at cc: the steps in order, then
// Bootstrap-Finish (LwM2M 1.1 Core §5.2.5, §6.1), and records the
// outcome. It ends within Timeout, or when the server closes.
func (s *Server) run(ctx context.Context, cc *udpclient.Conn, a Attempt, steps []step, f content.Format) {
	defer func() {
		s.mu.Lock()
		delete(s.running, a.Endpoint)
		s.mu.Unlock()
		s.wg.Done()
	}()
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	err := s.steps(ctx, cc, &a, steps, f)
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

// steps sends each step and then Bootstrap-Finish, appending to a.Steps
// as it goes; it stops at the first error.
func (s *Server) steps(ctx context.Context, cc *udpclient.Conn, a *Attempt, steps []step, f content.Format) error {
	for _, st := range steps {
		if st.delete {
			// Bootstrap-Delete: 2.02 Deleted (Core §5.2.7.5). A 4.04
			// means nothing was there to delete.
			err := s.exchange(ctx, cc, a, Step{Op: "delete", Path: st.path.String()}, codes.DELETE, nil, 0, codes.Deleted, codes.NotFound)
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
		err = s.exchange(ctx, cc, a, Step{Op: "write", Path: st.path.String(), What: st.what}, codes.PUT, payload, f, codes.Changed)
		if err != nil {
			return err
		}
	}
	// Bootstrap-Finish: POST /bs, 2.04; 4.06 when the device finds the
	// configuration inconsistent (Core §5.2.7.6).
	return s.exchange(ctx, cc, a, Step{Op: "finish", Path: "/bs"}, codes.POST, nil, 0, codes.Changed)
}

// exchange sends one request and records it as st; ok are the codes
// that count as success.
func (s *Server) exchange(ctx context.Context, cc *udpclient.Conn, a *Attempt, st Step, method codes.Code, payload []byte, f content.Format, ok ...codes.Code) error {
	rctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	req := cc.AcquireMessage(rctx)
	defer cc.ReleaseMessage(req)
	token, err := cc.GetToken()
	if err != nil {
		return err
	}
	req.SetCode(method)
	req.SetToken(token)
	req.SetType(message.Confirmable)
	req.SetMessageID(cc.GetMessageID())
	if err := req.SetPath(st.Path); err != nil {
		return err
	}
	if strings.Trim(st.Path, "/") == "" {
		req.Remove(message.URIPath) // Bootstrap-Delete of "/"
	}
	if payload != nil {
		req.SetContentFormat(message.MediaType(f))
		req.SetBody(bytes.NewReader(payload))
	}
	resp, err := cc.Do(req)
	if err != nil {
		a.Steps = append(a.Steps, st)
		if rctx.Err() != nil {
			return &noAnswerError{fmt.Sprintf("%s %s: the device did not answer", st.Op, st.Path)}
		}
		return fmt.Errorf("%s %s: %w", st.Op, st.Path, err)
	}
	defer cc.ReleaseMessage(resp)
	st.Code = codeString(resp.Code())
	a.Steps = append(a.Steps, st)
	for _, c := range ok {
		if resp.Code() == c {
			return nil
		}
	}
	err = fmt.Errorf("%s %s: the device answered %s", st.Op, st.Path, st.Code)
	if d := diagnostic(resp); d != "" {
		err = fmt.Errorf("%w: %s", err, d)
	}
	return err
}

// diagnostic returns a response's diagnostic payload (RFC 7252 §5.5.2),
// shortened and stripped of control characters.
func diagnostic(m *pool.Message) string {
	b, _ := m.ReadBody()
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

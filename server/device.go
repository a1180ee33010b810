package server

import (
	"bytes"
	"context"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// CodeError is a device's answer that was not the success code an
// operation expects. Use errors.As to get the CoAP code.
type CodeError struct {
	Op       string // "read", "write", ...
	Endpoint string
	Path     string
	Code     codes.Code
	Message  string // diagnostic payload, if the device sent one
}

func (e *CodeError) Error() string {
	s := fmt.Sprintf("server: %s %s on %s: %s", e.Op, e.Path, e.Endpoint, codeString(e.Code))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// TimeoutError reports a device that did not answer an operation in
// time. It matches context.DeadlineExceeded with errors.Is.
type TimeoutError struct {
	Op       string // "read", "write", ...
	Endpoint string
	Path     string
	After    time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("device %s did not answer %s %s within %s", e.Endpoint, strings.ToUpper(e.Op), e.Path, e.After)
}

func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// exchangeError says once what went wrong with an exchange: the device did
// not answer in time, the caller gave up, or the transport's own error.
func exchangeError(ctx context.Context, start time.Time, op, ep string, path model.Path, err error) error {
	switch ctx.Err() {
	case context.DeadlineExceeded:
		after := time.Since(start)
		if dl, ok := ctx.Deadline(); ok {
			after = dl.Sub(start)
		}
		if after >= time.Second {
			after = after.Round(time.Second)
		} else {
			after = after.Round(time.Millisecond)
		}
		return &TimeoutError{Op: op, Endpoint: ep, Path: path.String(), After: after}
	case context.Canceled:
		return fmt.Errorf("server: %s %s on %s: %w", op, path, ep, context.Canceled)
	}
	return fmt.Errorf("server: %s %s on %s: %w", op, path, ep, err)
}

// codeString formats a CoAP code the usual way, "4.04 NotFound".
func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d %v", c>>5, c&0x1f, c)
}

// maxReadSize bounds a Read reassembled from Block2 responses.
const maxReadSize = 4 << 20

// Content is a payload in a content format, as a device sent it.
type Content struct {
	Format  content.Format
	Payload []byte
}

// conn returns the CoAP connection to ep's registered address. After a
// restart this creates the connection from the stored address, so devices
// need not register again before the server can reach them.
func (s *Server) conn(ep string) (*udpclient.Conn, error) {
	reg, ok := s.Registration(ep)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotRegistered, ep)
	}
	s.mu.Lock()
	cs, closed, running, done := s.coap, s.closed, s.running, s.done
	s.mu.Unlock()
	if cs == nil {
		return nil, ErrNotListening
	}
	if closed {
		return nil, ErrClosed
	}
	if reg.Secure {
		// A DTLS server cannot open a session; use the device's own.
		cc, ok := s.session(reg.Addr)
		if !ok {
			return nil, fmt.Errorf("%w %q at %s", ErrNoSession, ep, reg.Addr)
		}
		return cc, nil
	}
	addr, err := net.ResolveUDPAddr("udp", reg.Addr)
	if err != nil {
		return nil, fmt.Errorf("server: address of %q: %w", ep, err)
	}
	// go-coap keys a connection by the device's address and the
	// server's address the device's datagrams arrive at. On a wildcard
	// bind that is the concrete address, not the listener's: without it
	// this would be a second connection, and the device's answers would
	// land on the one its Register made.
	var local []*net.UDPAddr
	if reg.Local != "" {
		la, err := net.ResolveUDPAddr("udp", reg.Local)
		if err != nil {
			return nil, fmt.Errorf("server: local address of %q: %w", ep, err)
		}
		local = append(local, la)
	}
	// Serve starts the go-coap server on another goroutine; a request
	// made right after Serve was called waits for it, up to a second.
	select {
	case <-running:
	case <-done:
	case <-time.After(time.Second):
	}
	return cs.NewConn(addr, local...)
}

// fromRegisteredAddr makes m leave from the address ep registered to.
// go-coap does so by itself once the device has sent something on the
// connection, but not on one made after a restart: on a host with
// several addresses the route may pick another source, and a device
// whose socket is connected to the server's address drops the request.
func (s *Server) fromRegisteredAddr(ep string, m *pool.Message) {
	reg, ok := s.Registration(ep)
	if !ok || reg.Secure {
		return
	}
	if ip, ok := hostIP(reg.Local); ok {
		m.SetControlMessage(&coapnet.ControlMessage{Src: net.IP(ip.AsSlice())})
	}
}

func (s *Server) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.requestTimeout())
}

func (s *Server) requestTimeout() time.Duration {
	if s.RequestTimeout > 0 {
		return s.RequestTimeout
	}
	return 30 * time.Second
}

// request is one CoAP exchange with a device.
type request struct {
	op, ep  string
	path    model.Path
	code    codes.Code
	format  content.Format // of the payload; ignored when payload is nil
	payload []byte
	accept  content.Format
	queries []string
	want    codes.Code // 0 accepts any answer
	block2  bool       // follow Block2 in the response
	opts    []message.Option
	// non sends the request once, as NON (RFC 7252 §4.3), for a request
	// that an unverified peer may have caused.
	non bool
}

// do runs req and returns the response content. It reassembles a Block2
// response (RFC 7959, 2.4) into one payload up to maxReadSize.
func (s *Server) do(ctx context.Context, req request) (Content, *pool.Message, error) {
	// A sleeping queue-mode device gets the request when it wakes; the
	// exchange's own timeout starts then.
	release, err := s.hold(ctx, req.ep, req.op)
	if err != nil {
		return Content{}, nil, err
	}
	defer release()
	cc, err := s.conn(req.ep)
	if err != nil {
		return Content{}, nil, err
	}
	start := time.Now()
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var out Content
	var buf []byte
	num := int64(0)
	for {
		m := cc.AcquireMessage(ctx)
		tok, err := cc.GetToken()
		if err != nil {
			cc.ReleaseMessage(m)
			return Content{}, nil, err
		}
		m.SetToken(tok)
		m.SetCode(req.code)
		m.SetType(message.Confirmable)
		if req.non {
			m.SetType(message.NonConfirmable)
		}
		m.SetMessageID(cc.GetMessageID())
		if err := m.SetPath(req.path.String()); err != nil {
			cc.ReleaseMessage(m)
			return Content{}, nil, err
		}
		if req.path.Len() == 0 {
			m.Remove(message.URIPath)
		}
		for _, q := range req.queries {
			m.AddQuery(q)
		}
		if req.accept != AnyFormat {
			m.SetAccept(message.MediaType(req.accept))
		}
		if req.payload != nil {
			m.SetContentFormat(message.MediaType(req.format))
			m.SetBody(bytes.NewReader(req.payload))
		}
		for _, o := range req.opts {
			m.SetOptionBytes(o.ID, o.Value)
		}
		s.fromRegisteredAddr(req.ep, m)
		if num > 0 {
			v, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, false)
			m.SetOptionUint32(message.Block2, v)
		}
		resp, err := cc.Do(m)
		cc.ReleaseMessage(m)
		if err != nil {
			return Content{}, nil, exchangeError(ctx, start, req.op, req.ep, req.path, err)
		}
		s.seen(req.ep)
		body, _ := resp.ReadBody()
		if req.want != 0 && resp.Code() != req.want {
			code := resp.Code()
			cc.ReleaseMessage(resp)
			return Content{}, nil, &CodeError{Op: req.op, Endpoint: req.ep, Path: req.path.String(), Code: code, Message: printable(body)}
		}
		if cf, err := resp.ContentFormat(); err == nil {
			out.Format = content.Format(cf)
		}
		buf = append(buf, body...)
		v, err := resp.Options().GetUint32(message.Block2)
		if !req.block2 || err != nil {
			out.Payload = buf
			return out, resp, nil
		}
		szx, n, more, err := blockwise.DecodeBlockOption(v)
		cc.ReleaseMessage(resp)
		if err != nil || !more {
			out.Payload = buf
			return out, nil, nil
		}
		if len(buf) > maxReadSize {
			return Content{}, nil, fmt.Errorf("server: %s %s on %s: response larger than %d bytes", req.op, req.path, req.ep, maxReadSize)
		}
		// Continue at the next offset, in 1024-byte blocks.
		next := (n + 1) * int64(szx.Size())
		if next%1024 != 0 {
			return Content{}, nil, fmt.Errorf("server: %s %s on %s: unaligned Block2 size %d", req.op, req.path, req.ep, szx.Size())
		}
		num = next / 1024
	}
}

// printable returns a diagnostic payload if it looks like text.
func printable(b []byte) string {
	if len(b) == 0 || len(b) > 256 {
		return ""
	}
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return ""
		}
	}
	return string(b)
}

func (s *Server) simple(ctx context.Context, req request) (Content, error) {
	c, resp, err := s.do(ctx, req)
	if resp != nil {
		s.release(req.ep, resp)
	}
	return c, err
}

func (s *Server) release(ep string, m *pool.Message) {
	if cc, err := s.conn(ep); err == nil {
		cc.ReleaseMessage(m)
	}
}

// Read reads path on ep (LwM2M 1.1 Core, 6.3.1) and returns the payload in
// the format the device chose; accept asks for one, AnyFormat leaves it to
// the device.
func (s *Server) Read(ctx context.Context, ep string, path model.Path, accept content.Format) (Content, error) {
	return s.simple(ctx, request{op: "read", ep: ep, path: path, code: codes.GET, accept: accept, want: codes.Content, block2: true})
}

// Write writes payload to path on ep (Core 6.3.3): replace sends PUT,
// which replaces the target; otherwise POST, a partial update.
func (s *Server) Write(ctx context.Context, ep string, path model.Path, format content.Format, payload []byte, replace bool) error {
	code := codes.POST
	if replace {
		code = codes.PUT
	}
	if payload == nil {
		payload = []byte{}
	}
	_, err := s.simple(ctx, request{op: "write", ep: ep, path: path, code: code, format: format, payload: payload, accept: AnyFormat, want: codes.Changed})
	return err
}

// Execute executes the resource at path on ep with the given arguments
// (Core 6.3.5; args in the 5.4.2 syntax, empty for none).
func (s *Server) Execute(ctx context.Context, ep string, path model.Path, args string) error {
	req := request{op: "execute", ep: ep, path: path, code: codes.POST, accept: AnyFormat, want: codes.Changed}
	if args != "" {
		req.payload = []byte(args)
		req.format = content.TextPlain
	}
	_, err := s.simple(ctx, req)
	return err
}

// Discover runs Discover on path (Core 6.3.2) and returns the links with
// their attributes.
func (s *Server) Discover(ctx context.Context, ep string, path model.Path) ([]corelink.Link, error) {
	c, err := s.simple(ctx, request{op: "discover", ep: ep, path: path, code: codes.GET, accept: content.LinkFormat, want: codes.Content, block2: true})
	if err != nil {
		return nil, err
	}
	links, err := corelink.Parse(c.Payload)
	if err != nil {
		return nil, fmt.Errorf("server: discover %s on %s: %w", path, ep, err)
	}
	return links, nil
}

// WriteAttributes sets notification attributes on path (Core 6.3.4), given
// as a query string such as "pmin=1&pmax=60"; "pmin" alone removes it.
func (s *Server) WriteAttributes(ctx context.Context, ep string, path model.Path, attrs string) error {
	var qs []string
	for _, q := range strings.Split(attrs, "&") {
		if q != "" {
			qs = append(qs, q)
		}
	}
	_, err := s.simple(ctx, request{op: "write-attributes", ep: ep, path: path, code: codes.PUT, accept: AnyFormat, queries: qs, want: codes.Changed})
	return err
}

// Create creates an object instance under the object path (Core 6.3.6) and
// returns the new instance's path from the Location-Path, when given.
func (s *Server) Create(ctx context.Context, ep string, object model.Path, format content.Format, payload []byte) (model.Path, error) {
	if payload == nil {
		payload = []byte{}
	}
	req := request{op: "create", ep: ep, path: object, code: codes.POST, format: format, payload: payload, accept: AnyFormat, want: codes.Created}
	_, resp, err := s.do(ctx, req)
	if err != nil {
		return model.Path{}, err
	}
	defer s.release(ep, resp)
	loc, err := resp.Options().LocationPath()
	if err != nil {
		return object, nil
	}
	p, err := model.ParsePath(loc)
	if err != nil {
		return object, nil
	}
	return p, nil
}

// Delete deletes the object instance at path (Core 6.3.7).
func (s *Server) Delete(ctx context.Context, ep string, path model.Path) error {
	_, err := s.simple(ctx, request{op: "delete", ep: ep, path: path, code: codes.DELETE, accept: AnyFormat, want: codes.Deleted})
	return err
}

// Notification is one Observe notification (RFC 7641), the first being
// the answer to the Observe request itself.
type Notification struct {
	Endpoint string
	Path     model.Path
	Seq      uint32 // the Observe option value
	Content
}

// Observation is a running observation; Cancel ends it.
type Observation struct {
	obs interface {
		Cancel(context.Context, ...message.Option) error
	}
	once sync.Once
	stop chan struct{}
	err  error
}

// Cancel deregisters the observation with the device (RFC 7641, 3.6) and
// stops calling the callback.
func (o *Observation) Cancel(ctx context.Context) error {
	o.once.Do(func() {
		close(o.stop)
		o.err = o.obs.Cancel(ctx)
	})
	return o.err
}

// Observe observes path on ep (Core 6.4.1) and calls fn for each
// notification, starting with the current value, until Cancel is called
// or ctx ends. fn runs on the connection's goroutine and must not block.
func (s *Server) Observe(ctx context.Context, ep string, path model.Path, accept content.Format, fn func(Notification)) (*Observation, error) {
	release, err := s.hold(ctx, ep, "observe")
	if err != nil {
		return nil, err
	}
	defer release()
	cc, err := s.conn(ep)
	if err != nil {
		return nil, err
	}
	o := &Observation{stop: make(chan struct{})}
	var mu sync.Mutex
	var first codes.Code
	var firstBody []byte
	firstSeen := make(chan struct{})
	cb := func(m *pool.Message) {
		select {
		case <-o.stop:
			return
		default:
		}
		s.seen(ep)
		body, _ := m.ReadBody()
		mu.Lock()
		if first == 0 {
			first, firstBody = m.Code(), body
			close(firstSeen)
		}
		mu.Unlock()
		if m.Code() != codes.Content {
			return
		}
		n := Notification{Endpoint: ep, Path: path}
		n.Payload = append([]byte(nil), body...)
		if cf, err := m.ContentFormat(); err == nil {
			n.Format = content.Format(cf)
		}
		n.Seq, _ = m.Observe()
		fn(n)
	}
	start := time.Now()
	rctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var opts []message.Option
	if accept != AnyFormat {
		opts = append(opts, coapopt.Uint(message.Accept, uint32(accept)))
	}
	oreq, err := cc.NewObserveRequest(rctx, path.String(), opts...)
	if err != nil {
		return nil, fmt.Errorf("server: observe %s on %s: %w", path, ep, err)
	}
	s.fromRegisteredAddr(ep, oreq)
	obs, err := cc.DoObserve(oreq, cb)
	cc.ReleaseMessage(oreq)
	if err != nil {
		if strings.HasPrefix(err.Error(), "unexpected return code") {
			// go-coap hands the first answer's code to DoObserve before
			// it calls cb with the answer (net/observation, handle): wait
			// for cb, which follows at once, for the code and diagnostic.
			select {
			case <-firstSeen:
			case <-time.After(time.Second):
			}
		}
		mu.Lock()
		code, body := first, firstBody
		mu.Unlock()
		if code != 0 && code != codes.Content {
			return nil, &CodeError{Op: "observe", Endpoint: ep, Path: path.String(), Code: code, Message: printable(body)}
		}
		return nil, exchangeError(rctx, start, "observe", ep, path, err)
	}
	o.obs = obs
	go func() {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = o.Cancel(cctx)
			cancel()
		case <-o.stop:
		}
	}()
	return o, nil
}

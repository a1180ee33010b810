// Package lwm2mtest is a minimal LwM2M server for the library's own tests:
// it takes registrations and lets a test send raw CoAP requests to a
// registered client. It decodes nothing; tests see CoAP as it is.
package lwm2mtest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"
)

// Registration is one Register or Update as the server saw it.
type Registration struct {
	Endpoint string
	Location string
	Query    []string
	Links    string
	Update   bool // a Registration Update, not a Register
	Conn     *udpclient.Conn
	At       time.Time
}

// Server is a test LwM2M server on 127.0.0.1.
type Server struct {
	t      testing.TB
	srv    *udpserver.Server
	ln     *coapnet.UDPConn
	mu     sync.Mutex
	regs   []Registration
	byEP   map[string]*Registration
	next   int
	notify chan Registration
	stop   chan struct{}
	once   sync.Once

	refuse   atomic.Uint32 // a code answered to Register, 0 for none
	attempts []time.Time   // every Register received, refused ones too
	changed  chan struct{} // a registration event happened

	sendCode atomic.Uint32 // the answer to Send (POST /dp), 0 for 2.04
	sends    []Send
}

// Send is one Send (POST /dp, LwM2M 1.1) the server received.
type Send struct {
	Format  message.MediaType
	Payload []byte
	Conn    *udpclient.Conn
}

// Option changes how Start sets up a Server.
type Option func(*settings)

type settings struct {
	ackTimeout    time.Duration
	maxRetransmit uint32
}

// WithTransmission sets the ACK_TIMEOUT and MAX_RETRANSMIT of the server's
// own requests (RFC 7252 §4.8; ACK_RANDOM_FACTOR 1.5), for tests that make
// loss cost milliseconds. The retransmission runner ticks at a quarter of
// ackTimeout.
func WithTransmission(ackTimeout time.Duration, maxRetransmit uint32) Option {
	return func(c *settings) { c.ackTimeout, c.maxRetransmit = ackTimeout, maxRetransmit }
}

// Start listens on 127.0.0.1 at a free port (or addr, to restart on the
// same port) and serves until the test ends or Close.
func Start(t testing.TB, addr string, opts ...Option) *Server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var set settings
	for _, o := range opts {
		o(&set)
	}
	var ln *coapnet.UDPConn
	var err error
	for i := 0; i < 50; i++ { // a restart on the same port may race the old socket's close
		if ln, err = coapnet.NewListenUDP("udp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("lwm2mtest: listen: %v", err)
	}
	s := &Server{t: t, ln: ln, byEP: map[string]*Registration{}, notify: make(chan Registration, 64), changed: make(chan struct{}, 1)}
	r := mux.NewRouter()
	r.DefaultHandle(mux.HandlerFunc(s.handle))
	s.stop = make(chan struct{})
	// Retransmit on time: go-coap's default runner ticks every 4 s.
	tick := 20 * time.Millisecond
	o := []udpserver.Option{options.WithMux(r), options.WithBlockwise(false, 0, 0), options.WithErrors(func(error) {})}
	if set.ackTimeout > 0 {
		tick = set.ackTimeout / 4
		o = append(o, options.WithTransmission(1, set.ackTimeout, set.maxRetransmit, 1.5))
	}
	o = append(o, options.WithPeriodicRunner(periodic.New(s.stop, tick)))
	s.srv = udp.NewServer(o...)
	go s.srv.Serve(ln)
	t.Cleanup(s.Close)
	return s
}

// Addr is the server's "host:port".
func (s *Server) Addr() string { return s.ln.LocalAddr().String() }

// URI is the server's coap:// URI.
func (s *Server) URI() string { return "coap://" + s.Addr() }

// Close stops the server.
func (s *Server) Close() {
	s.once.Do(func() { close(s.stop) })
	s.srv.Stop()
	s.ln.Close()
}

func (s *Server) handle(w mux.ResponseWriter, r *mux.Message) {
	p, _ := r.Options().Path()
	p = strings.Trim(p, "/")
	if p == "dp" && r.Code() == codes.POST {
		s.handleSend(w, r)
		return
	}
	if !strings.HasPrefix(p, "rd") || (r.Code() != codes.POST && r.Code() != codes.DELETE) {
		_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
		return
	}
	q, _ := r.Options().Queries()
	body, _ := r.ReadBody()
	cc, _ := w.Conn().(*udpclient.Conn)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.signal()
	if p == "rd" {
		s.attempts = append(s.attempts, time.Now())
		if c := codes.Code(s.refuse.Load()); c != 0 {
			_ = w.SetResponse(c, message.TextPlain, nil)
			return
		}
		var ep string
		for _, kv := range q {
			if v, ok := strings.CutPrefix(kv, "ep="); ok {
				ep = v
			}
		}
		s.next++
		reg := Registration{Endpoint: ep, Location: fmt.Sprintf("rd/%d", s.next), Query: q, Links: string(body), Conn: cc, At: time.Now()}
		s.regs = append(s.regs, reg)
		s.byEP[ep] = &reg
		s.send(reg)
		_ = w.SetResponse(codes.Created, message.TextPlain, nil,
			message.Option{ID: message.LocationPath, Value: []byte("rd")},
			message.Option{ID: message.LocationPath, Value: []byte(fmt.Sprint(s.next))})
		return
	}
	for ep, reg := range s.byEP {
		if reg.Location != p {
			continue
		}
		if r.Code() == codes.DELETE {
			delete(s.byEP, ep)
			s.send(Registration{Endpoint: ep, Location: p, At: time.Now()})
			_ = w.SetResponse(codes.Deleted, message.TextPlain, nil)
			return
		}
		up := Registration{Endpoint: ep, Location: p, Query: q, Links: string(body), Update: true, Conn: cc, At: time.Now()}
		reg.Conn = cc
		s.regs = append(s.regs, up)
		s.send(up)
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		return
	}
	_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
}

func (s *Server) handleSend(w mux.ResponseWriter, r *mux.Message) {
	body, _ := r.ReadBody()
	cf, _ := r.ContentFormat()
	cc, _ := w.Conn().(*udpclient.Conn)
	s.mu.Lock()
	s.sends = append(s.sends, Send{Format: cf, Payload: body, Conn: cc})
	s.mu.Unlock()
	s.signal()
	code := codes.Code(s.sendCode.Load())
	if code == 0 {
		code = codes.Changed
	}
	_ = w.SetResponse(code, message.TextPlain, nil)
}

// SetSendCode makes the server answer each Send with code; 0 is 2.04.
func (s *Server) SetSendCode(code codes.Code) { s.sendCode.Store(uint32(code)) }

// Sends returns the Sends received so far.
func (s *Server) Sends() []Send {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Send(nil), s.sends...)
}

func (s *Server) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// SetRefuse makes the server answer each Register with code; 0 accepts
// them again. Updates and De-registers are answered as usual.
func (s *Server) SetRefuse(code codes.Code) { s.refuse.Store(uint32(code)) }

// Registers returns how many Registers were accepted, and when every
// Register arrived, refused ones too.
func (s *Server) Registers() (accepted int, attempts []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.regs {
		if !r.Update {
			accepted++
		}
	}
	return accepted, append([]time.Time(nil), s.attempts...)
}

// WaitFor waits until cond holds, checking on every registration event
// and every 20 ms; it fails the test with what when ctx ends first.
func (s *Server) WaitFor(ctx context.Context, what string, cond func() bool) {
	s.t.Helper()
	for !cond() {
		select {
		case <-s.changed:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			s.t.Fatalf("lwm2mtest: timed out waiting for %s", what)
		}
	}
}

// WaitConn waits for ep's registration and returns the connection to it.
func (s *Server) WaitConn(ctx context.Context, ep string) *udpclient.Conn {
	s.t.Helper()
	var c *udpclient.Conn
	s.WaitFor(ctx, ep+" to register", func() bool {
		c = s.Conn(ep)
		return c != nil
	})
	return c
}

func (s *Server) send(r Registration) {
	select {
	case s.notify <- r:
	default:
	}
}

// Next waits for the next Register, Update or De-register (Conn nil).
func (s *Server) Next(ctx context.Context) (Registration, error) {
	select {
	case r := <-s.notify:
		return r, nil
	case <-ctx.Done():
		return Registration{}, ctx.Err()
	}
}

// Pending takes the events queued for Next without waiting.
func (s *Server) Pending() []Registration {
	var out []Registration
	for {
		select {
		case r := <-s.notify:
			out = append(out, r)
		default:
			return out
		}
	}
}

// WaitRegister waits for a Register (not an Update) from ep.
func (s *Server) WaitRegister(ctx context.Context, ep string) (Registration, error) {
	for {
		r, err := s.Next(ctx)
		if err != nil {
			return r, err
		}
		if r.Endpoint == ep && !r.Update && r.Conn != nil {
			return r, nil
		}
	}
}

// Forget drops every registration, as a server that lost its state.
func (s *Server) Forget() {
	s.mu.Lock()
	s.byEP = map[string]*Registration{}
	s.mu.Unlock()
}

// Conn returns the connection to ep's current registration.
func (s *Server) Conn(ep string) *udpclient.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.byEP[ep]; ok {
		return r.Conn
	}
	return nil
}

// Response is a decoded CoAP response.
type Response struct {
	Code    codes.Code
	Format  message.MediaType
	Payload []byte
	Options message.Options
}

func toResponse(m *pool.Message) (Response, error) {
	body, err := m.ReadBody()
	if err != nil {
		return Response{}, err
	}
	cf, _ := m.Options().ContentFormat()
	opts, _ := m.Options().Clone()
	return Response{Code: m.Code(), Format: cf, Payload: body, Options: opts}, nil
}

// Do sends one request with method code to path on conn, with optional
// content format (negative for none), payload and options.
func Do(ctx context.Context, conn *udpclient.Conn, code codes.Code, path string, format int, payload []byte, opts ...message.Option) (Response, error) {
	req := conn.AcquireMessage(ctx)
	defer conn.ReleaseMessage(req)
	tok, err := message.GetToken()
	if err != nil {
		return Response{}, err
	}
	req.SetCode(code)
	req.SetToken(tok)
	req.ResetOptionsTo(opts)
	if err := req.SetPath(path); err != nil {
		return Response{}, err
	}
	if format >= 0 {
		req.SetContentFormat(message.MediaType(format))
	}
	if payload != nil {
		req.SetBody(bytes.NewReader(payload))
	}
	resp, err := conn.Do(req)
	if err != nil {
		return Response{}, err
	}
	return toResponse(resp)
}

// Observe registers an observation of path and delivers every
// notification (the first response included) on the returned channel.
func Observe(ctx context.Context, conn *udpclient.Conn, path string, opts ...message.Option) (<-chan Response, func(), error) {
	ch := make(chan Response, 64)
	obs, err := conn.Observe(ctx, path, func(m *pool.Message) {
		r, err := toResponse(m)
		if err != nil {
			return
		}
		select {
		case ch <- r:
		default:
		}
	}, opts...)
	if err != nil {
		return nil, nil, err
	}
	return ch, func() { _ = obs.Cancel(context.Background()) }, nil
}

package lwm2mtest

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// RawServer is a bare LwM2M server on a UDP socket, for tests that decide
// how each notification is answered: acknowledged (at once or late),
// reset, or not at all. It takes one client.
type RawServer struct {
	t    testing.TB
	conn *net.UDPConn

	mu      sync.Mutex
	peer    netip.AddrPort
	mid     uint16
	pending map[string]chan message.Message
	answer  func(Note) Answer
	refuse  func(RawRegister) (codes.Code, string)

	// Registers receives each Register (POST /rd) as it comes.
	Registers chan RawRegister
	// Notes receives every notification (a Confirmable or Non-confirmable
	// response from the client).
	Notes chan Note
	// Inbox receives every message from the client except its
	// registration requests, once the server has handled it: for tests
	// that send datagrams with SendBytes and look at whatever comes back
	// (responses, resets, notifications). When it is full, messages are
	// dropped.
	Inbox chan message.Message
}

// RawRegister is a Register as the raw server saw it.
type RawRegister struct {
	Query []string
	Links string
}

// Note is one notification.
type Note struct {
	Msg message.Message
	At  time.Time
}

// Observe returns the notification's Observe value, -1 without one.
func (n Note) Observe() int64 {
	v, err := n.Msg.Options.GetUint32(message.Observe)
	if err != nil {
		return -1
	}
	return int64(v)
}

// Answer says how the raw server answers a notification: Type
// Acknowledgement or Reset, after Delay; the zero Answer sends nothing.
type Answer struct {
	Type  message.Type
	Delay time.Duration
	Send  bool
	Then  func() // if set, runs just before the answer is sent
}

// Ack, Reset and Ignore are the usual answers.
var (
	Ack    = Answer{Type: message.Acknowledgement, Send: true}
	Reset  = Answer{Type: message.Reset, Send: true}
	Ignore = Answer{}
)

// StartRaw listens on 127.0.0.1 at a free port until the test ends. By
// default it acknowledges Confirmable notifications at once and does not
// answer Non-confirmable ones.
func StartRaw(t testing.TB) *RawServer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("lwm2mtest: listen: %v", err)
	}
	s := &RawServer{t: t, conn: c, pending: map[string]chan message.Message{},
		Registers: make(chan RawRegister, 16), Notes: make(chan Note, 256), Inbox: make(chan message.Message, 4096)}
	s.answer = func(n Note) Answer {
		if n.Msg.Type == message.Confirmable {
			return Ack
		}
		return Ignore
	}
	t.Cleanup(func() { c.Close() })
	go s.loop()
	return s
}

// URI is the server's coap:// URI.
func (s *RawServer) URI() string { return "coap://" + s.conn.LocalAddr().String() }

// RefuseRegister makes the server answer each Register with the code and
// diagnostic payload f returns; a code below 4.00 accepts it.
func (s *RawServer) RefuseRegister(f func(RawRegister) (codes.Code, string)) {
	s.mu.Lock()
	s.refuse = f
	s.mu.Unlock()
}

// OnNotify sets how notifications are answered from now on.
func (s *RawServer) OnNotify(f func(Note) Answer) {
	s.mu.Lock()
	s.answer = f
	s.mu.Unlock()
}

func (s *RawServer) loop() {
	buf := make([]byte, 1<<16) // hostile tests send and provoke large datagrams
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		m := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
			continue
		}
		m.Payload = append([]byte(nil), m.Payload...)
		m.Token = append(message.Token(nil), m.Token...)
		m.Options = cloneOptions(m.Options)
		switch {
		case m.Code >= codes.GET && m.Code <= codes.DELETE:
			s.serve(from, m)
		case m.Code == codes.Empty:
		case m.Type == message.Acknowledgement:
			s.mu.Lock()
			ch := s.pending[string(m.Token)]
			delete(s.pending, string(m.Token))
			s.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		default:
			s.notification(m)
		}
		if p, _ := m.Options.Path(); m.Code >= codes.GET && m.Code <= codes.DELETE && strings.HasPrefix(strings.Trim(p, "/"), "rd") {
			continue
		}
		select {
		case s.Inbox <- m:
		default:
		}
	}
}

func cloneOptions(in message.Options) message.Options {
	out := make(message.Options, len(in))
	for i, o := range in {
		out[i] = message.Option{ID: o.ID, Value: append([]byte(nil), o.Value...)}
	}
	return out
}

func (s *RawServer) notification(m message.Message) {
	n := Note{Msg: m, At: time.Now()}
	s.mu.Lock()
	answer := s.answer
	s.mu.Unlock()
	a := answer(n)
	select {
	case s.Notes <- n:
	default:
	}
	if !a.Send {
		return
	}
	reply := message.Message{Type: a.Type, Code: codes.Empty, MessageID: m.MessageID}
	send := func() {
		if a.Then != nil {
			a.Then()
		}
		s.write(reply)
	}
	if a.Delay > 0 {
		time.AfterFunc(a.Delay, send)
		return
	}
	send()
}

// serve answers the registration interface: Register, Update, De-register.
func (s *RawServer) serve(from netip.AddrPort, m message.Message) {
	p, _ := m.Options.Path()
	p = strings.Trim(p, "/")
	resp := message.Message{Type: message.Acknowledgement, MessageID: m.MessageID, Token: m.Token, Code: codes.NotFound}
	switch {
	case p == "rd" && m.Code == codes.POST:
		s.mu.Lock()
		s.peer = from
		s.mu.Unlock()
		q, _ := m.Options.Queries()
		reg := RawRegister{Query: q, Links: string(m.Payload)}
		select {
		case s.Registers <- reg:
		default:
		}
		s.mu.Lock()
		refuse := s.refuse
		s.mu.Unlock()
		resp.Code = codes.Created
		resp.Options = message.Options{{ID: message.LocationPath, Value: []byte("rd")}, {ID: message.LocationPath, Value: []byte("1")}}
		if refuse != nil {
			if code, diag := refuse(reg); code >= codes.BadRequest {
				resp.Code, resp.Options, resp.Payload = code, nil, []byte(diag)
			}
		}
	case p == "rd/1" && m.Code == codes.POST:
		resp.Code = codes.Changed
	case p == "rd/1" && m.Code == codes.DELETE:
		resp.Code = codes.Deleted
	}
	if m.Type != message.Confirmable {
		resp.Type = message.NonConfirmable
	}
	out := make([]byte, 256)
	if n, err := coder.DefaultCoder.Encode(resp, out); err == nil {
		_, _ = s.conn.WriteToUDPAddrPort(out[:n], from)
	}
}

func (s *RawServer) write(m message.Message) {
	s.mu.Lock()
	peer := s.peer
	s.mu.Unlock()
	out := make([]byte, 2048)
	n, err := coder.DefaultCoder.Encode(m, out)
	if err != nil {
		s.t.Errorf("lwm2mtest: encode: %v", err)
		return
	}
	_, _ = s.conn.WriteToUDPAddrPort(out[:n], peer)
}

// WaitRegister waits for the next Register.
func (s *RawServer) WaitRegister(ctx context.Context) (RawRegister, error) {
	select {
	case r := <-s.Registers:
		return r, nil
	case <-ctx.Done():
		return RawRegister{}, ctx.Err()
	}
}

// Request sends a Confirmable request to the registered client and waits
// for its piggybacked response.
func (s *RawServer) Request(ctx context.Context, code codes.Code, path string, opts ...message.Option) (message.Message, error) {
	return s.request(ctx, code, path, nil, nil, opts...)
}

// RequestBody is Request with a payload.
func (s *RawServer) RequestBody(ctx context.Context, code codes.Code, path string, payload []byte, opts ...message.Option) (message.Message, error) {
	return s.request(ctx, code, path, nil, payload, opts...)
}

func (s *RawServer) request(ctx context.Context, code codes.Code, path string, tok message.Token, payload []byte, opts ...message.Option) (message.Message, error) {
	if tok == nil {
		var err error
		if tok, err = message.GetToken(); err != nil {
			return message.Message{}, err
		}
	}
	m := message.Message{Type: message.Confirmable, Code: code, Token: tok, Payload: payload, Options: make(message.Options, 0, 8)}
	buf := make([]byte, 256)
	var err error
	m.Options, _, err = m.Options.SetPath(buf, path)
	if err != nil {
		return message.Message{}, err
	}
	for _, o := range opts {
		m.Options = m.Options.Add(o)
	}
	ch := make(chan message.Message, 1)
	s.mu.Lock()
	s.mid++
	m.MessageID = int32(s.mid)
	s.pending[string(tok)] = ch
	s.mu.Unlock()
	s.write(m)
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return message.Message{}, ctx.Err()
	}
}

// Observe registers an observation of path and returns the first
// response, which carries the token of the notifications.
func (s *RawServer) Observe(ctx context.Context, path string, opts ...message.Option) (message.Message, error) {
	return s.ObserveToken(ctx, path, nil, opts...)
}

// ObserveToken is Observe with token tok (nil: a new one).
func (s *RawServer) ObserveToken(ctx context.Context, path string, tok message.Token, opts ...message.Option) (message.Message, error) {
	obs := message.Option{ID: message.Observe, Value: nil} // 0
	return s.request(ctx, codes.GET, path, tok, nil, append([]message.Option{obs}, opts...)...)
}

// NextNote waits for the next notification.
func (s *RawServer) NextNote(ctx context.Context) (Note, error) {
	select {
	case n := <-s.Notes:
		return n, nil
	case <-ctx.Done():
		return Note{}, ctx.Err()
	}
}

// SendBytes writes b to the registered client as it is, from the
// server's address: the only one the client's connected socket accepts.
func (s *RawServer) SendBytes(b []byte) {
	s.mu.Lock()
	peer := s.peer
	s.mu.Unlock()
	if _, err := s.conn.WriteToUDPAddrPort(b, peer); err != nil {
		s.t.Errorf("lwm2mtest: send: %v", err)
	}
}

// Peer is the address the client registered from.
func (s *RawServer) Peer() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

// Send writes m to the registered client as it is.
func (s *RawServer) Send(m message.Message) { s.write(m) }

// Close stops the server: its port is closed, as a server that is gone.
func (s *RawServer) Close() { s.conn.Close() }

// Run runs c until the test ends, waits until it has registered with s
// and taken the answer, and returns a context for the test's requests
// that ends with the test (20 s at most).
func (s *RawServer) Run(t testing.TB, c *lwm2m.Client) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := s.WaitRegister(ctx); err != nil {
		t.Fatalf("lwm2mtest: no Register: %v", err)
	}
	for !c.Registered() && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return ctx
}

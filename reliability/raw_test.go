package reliability_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// rawServer is an LwM2M server on a plain UDP socket: it accepts the
// client's registration and otherwise lets the test send any bytes at all
// from the server's own address, the only address the client's connected
// socket takes datagrams from.
type rawServer struct {
	t    testing.TB
	conn *net.UDPConn

	mu     sync.Mutex
	client *net.UDPAddr
	regd   chan struct{}
	in     chan message.Message // everything else the client sent
	mid    uint16
}

func startRaw(t testing.TB) *rawServer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{t: t, conn: c, regd: make(chan struct{}), in: make(chan message.Message, 4096), mid: uint16(rand.Uint32())}
	done := make(chan struct{})
	go func() { defer close(done); s.loop() }()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

func (s *rawServer) URI() string { return "coap://" + s.conn.LocalAddr().String() }

func (s *rawServer) loop() {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			if errors_Is_closed(err) {
				return
			}
			continue
		}
		m := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
			continue
		}
		m.Token = bytes.Clone(m.Token)
		m.Payload = bytes.Clone(m.Payload)
		for i := range m.Options {
			m.Options[i].Value = bytes.Clone(m.Options[i].Value)
		}
		path, _ := m.Options.Path()
		path = strings.Trim(path, "/")
		switch {
		case m.Code == codes.POST && path == "rd":
			s.mu.Lock()
			first := s.client == nil
			s.client = from
			s.mu.Unlock()
			s.reply(from, m, codes.Created, message.Option{ID: message.LocationPath, Value: []byte("rd")},
				message.Option{ID: message.LocationPath, Value: []byte("1")})
			if first {
				close(s.regd)
			}
			continue
		case m.Code == codes.POST && path == "rd/1":
			s.reply(from, m, codes.Changed)
			continue
		case m.Code == codes.DELETE && path == "rd/1":
			s.reply(from, m, codes.Deleted)
			continue
		case m.Type == message.Confirmable && m.Code >= codes.Created:
			// A confirmable notification: acknowledge it.
			_, _ = s.conn.WriteToUDP(encode(message.Message{Type: message.Acknowledgement, MessageID: m.MessageID}), from)
		}
		select {
		case s.in <- m:
		default:
		}
	}
}

func errors_Is_closed(err error) bool {
	return strings.Contains(err.Error(), "use of closed network connection")
}

func (s *rawServer) reply(to *net.UDPAddr, req message.Message, code codes.Code, opts ...message.Option) {
	_, _ = s.conn.WriteToUDP(encode(message.Message{Type: message.Acknowledgement, MessageID: req.MessageID,
		Token: req.Token, Code: code, Options: opts}), to)
}

func encode(m message.Message) []byte {
	n, err := coder.DefaultCoder.Size(m)
	if err != nil {
		panic(err)
	}
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		panic(err)
	}
	return b
}

// waitRegistered waits for the client's Register.
func (s *rawServer) waitRegistered() {
	s.t.Helper()
	select {
	case <-s.regd:
	case <-time.After(10 * time.Second):
		s.t.Fatal("client did not register")
	}
}

// send writes raw bytes to the client from the server's address.
func (s *rawServer) send(b []byte) {
	s.mu.Lock()
	to := s.client
	s.mu.Unlock()
	if _, err := s.conn.WriteToUDP(b, to); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

// nextMID returns a fresh message ID.
func (s *rawServer) nextMID() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mid++
	return s.mid
}

// req builds a confirmable request with a fresh MID and an 8-byte token.
func (s *rawServer) req(code codes.Code, path string, cf int, payload []byte, opts ...message.Option) message.Message {
	tok := make([]byte, 8)
	binary.BigEndian.PutUint64(tok, rand.Uint64())
	var o message.Options
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		if seg != "" {
			o = append(o, message.Option{ID: message.URIPath, Value: []byte(seg)})
		}
	}
	if cf >= 0 {
		o = append(o, message.Option{ID: message.ContentFormat, Value: encodeUint(uint32(cf))})
	}
	o = append(o, opts...)
	// Encode wants options sorted by number.
	sortOptions(o)
	return message.Message{Type: message.Confirmable, MessageID: int32(s.nextMID()), Token: tok, Code: code, Options: o, Payload: payload}
}

func sortOptions(o message.Options) {
	for i := 1; i < len(o); i++ {
		for j := i; j > 0 && o[j].ID < o[j-1].ID; j-- {
			o[j], o[j-1] = o[j-1], o[j]
		}
	}
}

// roundTrip sends m and waits for the response with its token.
func (s *rawServer) roundTrip(m message.Message) (message.Message, error) {
	s.send(encode(m))
	return s.await(func(r message.Message) bool { return bytes.Equal(r.Token, m.Token) && len(m.Token) > 0 }, 5*time.Second)
}

func (s *rawServer) await(match func(message.Message) bool, d time.Duration) (message.Message, error) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case r := <-s.in:
			if match(r) {
				return r, nil
			}
		case <-tm.C:
			return message.Message{}, fmt.Errorf("no response within %v", d)
		}
	}
}

// probe reads /5/0/3 and returns every other message that arrived before
// its answer: the client's answers to whatever was sent before.
func (s *rawServer) probe() (codes.Code, []message.Message, error) {
	m := s.req(codes.GET, "/5/0/3", -1, nil)
	b := encode(m)
	s.send(b)
	var others []message.Message
	tm := time.NewTimer(10 * time.Second)
	defer tm.Stop()
	// Resend as CoAP does (same MID): under a flood the kernel may drop it.
	re := time.NewTicker(100 * time.Millisecond)
	defer re.Stop()
	for {
		select {
		case <-re.C:
			s.send(b)
		case r := <-s.in:
			if bytes.Equal(r.Token, m.Token) {
				// Collect stragglers answered concurrently.
				late := time.After(30 * time.Millisecond)
				for {
					select {
					case o := <-s.in:
						others = append(others, o)
					case <-late:
						return r.Code, others, nil
					}
				}
			}
			others = append(others, r)
		case <-tm.C:
			return 0, others, fmt.Errorf("probe: no answer")
		}
	}
}

// rawDevice runs a client with the /5 object against a rawServer, logging
// into a counting handler.
func rawDevice(t testing.TB, fw fwupdate.Config) (*rawServer, *countingHandler, *fwupdate.Object) {
	t.Helper()
	s := startRaw(t)
	ch := newCounting(nil)
	log := slog.New(ch)
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "hostile", Server: s.URI(), Logger: log, Tx: clientTx(),
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if fw.Download.Retries == 0 {
		fw.Download = downloadTx()
		fw.Download.Retries = 1
	}
	fw.Logger = log
	obj, err := fwupdate.Install(c, &hashHandlers{}, fw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; obj.Close() })
	s.waitRegistered()
	return s, ch, obj
}

package reliability_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// rawServer is lwm2mtest's RawServer with what the hostile tests send:
// requests built and encoded by hand, sent as bytes from the server's own
// address (the only one the client's connected socket takes datagrams
// from), and whatever the client sends back read from its Inbox.
type rawServer struct {
	*lwm2mtest.RawServer
	t testing.TB

	mu  sync.Mutex
	mid uint16
}

func startRaw(t testing.TB) *rawServer {
	t.Helper()
	return &rawServer{RawServer: lwm2mtest.StartRaw(t), t: t, mid: uint16(rand.Uint32())}
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.WaitRegister(ctx); err != nil {
		s.t.Fatal("client did not register")
	}
}

// send writes raw bytes to the client from the server's address.
func (s *rawServer) send(b []byte) { s.SendBytes(b) }

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
		case r := <-s.Inbox:
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
		case r := <-s.Inbox:
			if bytes.Equal(r.Token, m.Token) {
				// Collect stragglers answered concurrently.
				late := time.After(30 * time.Millisecond)
				for {
					select {
					case o := <-s.Inbox:
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

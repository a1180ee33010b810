package reliability_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// rawHeader is a CoAP header (RFC 7252 §3) with any token length.
func rawHeader(typ message.Type, tkl int, code codes.Code, mid uint16) []byte {
	return []byte{0x40 | byte(typ)<<4 | byte(tkl&0xf), byte(code), byte(mid >> 8), byte(mid)}
}

// uriPath encodes Uri-Path options as the first options of a message.
func uriPath(segs ...string) []byte {
	var b []byte
	delta := 11
	for _, s := range segs {
		b = append(b, byte(delta<<4|len(s)))
		b = append(b, s...)
		delta = 0
	}
	return b
}

// hostileCase is one class of bad input: datagrams built fresh each
// repetition, and what the client must still do after them.
type hostileCase struct {
	name  string
	build func(s *rawServer) [][]byte
	// after checks the object state the input must leave, if any.
	after func(t *testing.T, s *rawServer)
	// accepted: the request is well formed and its 2.04 is right; the
	// failure comes later, in the Update Result.
	accepted bool
}

const hostileRepeats = 20

func hostileCases(t *testing.T) []hostileCase {
	rng := rand.New(rand.NewPCG(6, 6))
	closed := freeUDPPort(t)
	tcpClosed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		l.Close()
		return a
	}()
	uri := func(u string) func(s *rawServer) [][]byte {
		return func(s *rawServer) [][]byte {
			return [][]byte{encode(s.req(codes.PUT, "/5/0/1", 0, []byte(u)))}
		}
	}
	block := func(szx blockwise.SZX, num int64, more bool, payload int) func(s *rawServer) [][]byte {
		return func(s *rawServer) [][]byte {
			v, _ := blockwise.EncodeBlockOption(szx, num, more)
			if szx == 7 {
				v = uint32(num)<<4 | 7 // BERT: EncodeBlockOption refuses it
				if more {
					v |= 8
				}
			}
			return [][]byte{encode(s.req(codes.PUT, "/5/0/0", 42, make([]byte, payload), message.Option{ID: message.Block1, Value: encodeUint(v)}))}
		}
	}
	wantResult := func(res fwupdate.Result) func(t *testing.T, s *rawServer) {
		return func(t *testing.T, s *rawServer) {
			t.Helper()
			waitfor.Until(t, 20*time.Second, func() error {
				st, r := rawReadInt(t, s, "/5/0/3"), rawReadInt(t, s, "/5/0/5")
				if st != int(fwupdate.StateIdle) || r != int(res) {
					return fmt.Errorf("state %d result %d, want Idle and %d (%v)", st, r, res, res)
				}
				return nil
			})
		}
	}
	return []hostileCase{
		{name: "garbage datagrams", build: func(*rawServer) [][]byte {
			var out [][]byte
			for range 10 {
				b := make([]byte, rng.IntN(300))
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				out = append(out, b)
				if len(b) > 0 { // the same with a valid version field
					c := bytes.Clone(b)
					c[0] = 0x40 | c[0]&0x3f
					out = append(out, c)
				}
			}
			return append(out, []byte{}, []byte{0x40}, []byte{0x40, 0x01, 0x00})
		}},
		{name: "truncated options", build: func(s *rawServer) [][]byte {
			h := rawHeader(message.Confirmable, 0, codes.GET, s.nextMID())
			return [][]byte{
				append(bytes.Clone(h), 0xBA, '5'),                               // Uri-Path of 10 bytes, 1 there
				append(bytes.Clone(h), 0xBD),                                    // extended length byte missing
				append(bytes.Clone(h), 0xBE, 0x01),                              // 2-byte extended length, 1 there
				append(bytes.Clone(h), 0xF1, 'x'),                               // reserved delta 15 outside the payload marker
				append(bytes.Clone(h), 0x1F, 'x'),                               // reserved length 15
				append(append(bytes.Clone(h), uriPath("5", "0", "3")...), 0xFF), // payload marker, no payload
			}
		}},
		{name: "duplicated critical options", build: func(s *rawServer) [][]byte {
			return [][]byte{
				encode(s.req(codes.GET, "/5/0/3", -1, nil, message.Option{ID: message.Accept, Value: nil}, message.Option{ID: message.Accept, Value: encodeUint(42)})),
				encode(s.req(codes.GET, "/5/0/3", -1, nil, message.Option{ID: message.URIHost, Value: []byte("a")}, message.Option{ID: message.URIHost, Value: []byte("b")})),
			}
		}},
		{name: "unknown critical options", build: func(s *rawServer) [][]byte {
			return [][]byte{
				encode(s.req(codes.GET, "/5/0/3", -1, nil, message.Option{ID: 2049, Value: []byte{1}})),
				encode(s.req(codes.GET, "/5/0/3", -1, nil, message.Option{ID: 65001, Value: []byte("x")})),
				encode(s.req(codes.PUT, "/5/0/13", 0, []byte("5"), message.Option{ID: 25, Value: []byte{1}})),
			}
		}},
		{name: "oversized tokens", build: func(s *rawServer) [][]byte {
			var out [][]byte
			for tkl := 9; tkl <= 15; tkl++ {
				b := rawHeader(message.Confirmable, tkl, codes.GET, s.nextMID())
				b = append(b, bytes.Repeat([]byte{0xAA}, tkl)...)
				out = append(out, append(b, uriPath("5", "0", "3")...))
			}
			return out
		}},
		{name: "oversized payloads", build: func(s *rawServer) [][]byte {
			big := bytes.Repeat([]byte("A"), 60000)
			return [][]byte{
				encode(s.req(codes.PUT, "/5/0/1", 0, big)),
				encode(s.req(codes.POST, "/5/0/2", -1, big)),
				encode(s.req(codes.PUT, "/5/0/13", 0, big)),
				encode(s.req(codes.POST, "/1/0", 11542, big)),
			}
		}},
		{name: "Block1 with absurd size", build: block(7, 0, true, 1024)},
		{name: "Block1 with absurd number", build: block(blockwise.SZX1024, 1<<20-1, true, 1024)},
		{name: "Block1 payload beyond its size", build: block(blockwise.SZX16, 0, true, 1024)},
		{name: "Block1 option too long", build: func(s *rawServer) [][]byte {
			return [][]byte{encode(s.req(codes.PUT, "/5/0/0", 42, make([]byte, 1024), message.Option{ID: message.Block1, Value: []byte{0xff, 0xff, 0xff, 0xfe, 0x0e}}))}
		}},
		{name: "300-byte Package URI", build: uri("coap://127.0.0.1/" + strings.Repeat("a", 283)), after: wantResult(fwupdate.ResultInvalidURI)},
		{name: "non-UTF-8 Package URI", build: uri("coap://127.0.0.1/\xff\xfe\xc0"), after: wantResult(fwupdate.ResultInvalidURI)},
		{name: "TLV bomb", build: func(s *rawServer) [][]byte {
			// A record claiming 16 MiB; an object instance nested 5000 deep;
			// a multiple resource with 15000 instances.
			huge := []byte{0xD8, 0x01, 0xff, 0xff, 0xff, 1, 2, 3}
			var deep []byte
			for range 2000 {
				deep = append([]byte{0x10, 0x00, byte(len(deep) >> 8), byte(len(deep))}, deep...)
			}
			var many []byte
			for i := range 15000 {
				many = append(many, 0x41, byte(i), 1) // resource instance i%256 = 1
			}
			multi := append([]byte{0x90, 0x01, byte(len(many) >> 8), byte(len(many))}, many...)
			return [][]byte{
				encode(s.req(codes.POST, "/1/0", 11542, huge)),
				encode(s.req(codes.POST, "/1/0", 11542, deep)),
				encode(s.req(codes.POST, "/1/0", 11542, multi)),
			}
		}},
		{name: "SenML bomb", build: func(s *rawServer) [][]byte {
			var recs []string
			for range 2000 {
				recs = append(recs, `{"n":"/1/0/1","v":1}`)
			}
			many := "[" + strings.Join(recs, ",") + "]"
			cborDeep := bytes.Repeat([]byte{0x81}, 50000)                                  // arrays of one, 50000 deep
			cborHuge := []byte{0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa0} // 2^63-1 elements claimed
			cborMap := []byte{0x81, 0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}  // a map claiming 2^63-1 pairs
			return [][]byte{
				encode(s.req(codes.POST, "/1/0", 110, []byte(strings.Repeat("[", 50000)))),
				encode(s.req(codes.POST, "/1/0", 110, []byte(many))),
				encode(s.req(codes.POST, "/1/0", 112, cborDeep)),
				encode(s.req(codes.POST, "/1/0", 112, cborHuge)),
				encode(s.req(codes.POST, "/1/0", 112, cborMap)),
			}
		}},
		{name: "Package URI at a closed CoAP port", build: uri("coap://" + closed + "/fw"), accepted: true, after: wantResult(fwupdate.ResultConnectionLost)},
		{name: "Package URI at a closed HTTP port", build: uri("http://" + tcpClosed + "/fw"), accepted: true, after: wantResult(fwupdate.ResultConnectionLost)},
	}
}

func rawReadInt(t *testing.T, s *rawServer, path string) int {
	t.Helper()
	r, err := s.roundTrip(s.req(codes.GET, path, -1, nil, message.Option{ID: message.Accept, Value: nil}))
	if err != nil || r.Code != codes.Content {
		t.Fatalf("read %s: %v %v", path, r.Code, err)
	}
	v, err := strconv.Atoi(string(r.Payload))
	if err != nil {
		t.Fatalf("read %s: %q", path, r.Payload)
	}
	return v
}

// Every class of hostile input gets a CoAP error or is dropped, is not
// logged per packet, and leaves the client serving.
func TestHostileInput(t *testing.T) {
	s, logs, _ := rawDevice(t, fwupdate.Config{})
	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			_, _, before := logs.counts()
			sent, answered := 0, 0
			repeats := hostileRepeats
			if tc.after != nil && strings.Contains(tc.name, "closed") {
				repeats = 1 // each write starts a real download attempt
			}
			for range repeats {
				for _, b := range tc.build(s) {
					s.send(b)
					sent++
				}
				code, answers, err := s.probe()
				if err != nil {
					t.Fatalf("client stopped serving: %v", err)
				}
				if code != codes.Content {
					t.Fatalf("normal read after hostile input: %v", code)
				}
				for _, a := range answers {
					answered++
					if a.Type != message.Reset && a.Code != codes.Empty && a.Code < codes.BadRequest && !(tc.accepted && a.Code == codes.Changed) {
						t.Errorf("hostile input answered %v (%v), want an error, a reset or nothing", a.Code, a.Type)
					}
				}
			}
			if tc.after != nil {
				tc.after(t, s)
			}
			_, _, after := logs.counts()
			var logged []string
			for msg, n := range after {
				if d := n - before[msg]; d > 0 {
					logged = append(logged, fmt.Sprintf("%q×%d", msg, d))
				}
			}
			t.Logf("%d datagrams, %d answers (errors/resets), logs: %s", sent, answered, strings.Join(logged, ", "))
			for msg, n := range after {
				if d := n - before[msg]; d > 1 && logs.levelOf(msg) >= slog.LevelInfo && repeats > 1 {
					t.Errorf("logged %q %d times for %d repetitions: a flood of bad input floods the log", msg, d, repeats)
				}
			}
		})
	}
}

// A request from an address other than the server's never reaches the
// client's handler: its socket is connected to the server (RFC 7252 §4.4:
// responses are matched by endpoint, and the client serves only its server).
func TestHostileOtherAddress(t *testing.T) {
	s, _, _ := rawDevice(t, fwupdate.Config{})
	client := s.Peer()
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for range hostileRepeats {
		if _, err := other.WriteToUDPAddrPort(encode(s.req(codes.PUT, "/5/0/1", 0, []byte("coap://127.0.0.1:9/x"))), client); err != nil {
			t.Fatal(err)
		}
	}
	_ = other.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 2048)
	if n, _, err := other.ReadFromUDP(buf); err == nil {
		t.Fatalf("the client answered a stranger: % x", buf[:n])
	}
	if code, _, err := s.probe(); err != nil || code != codes.Content {
		t.Fatalf("read from the server after: %v %v", code, err)
	}
	if st := rawReadInt(t, s, "/5/0/3"); st != int(fwupdate.StateIdle) {
		t.Fatalf("a stranger's Package URI changed the state to %d", st)
	}
}

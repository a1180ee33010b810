package lwm2m

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// blob is an object whose resources 0 and 1 take streamed writes. Its
// Instances and Resources do not allocate, as fwupdate's Resources.
type blob struct {
	id     uint16
	gone   atomic.Bool // instance 0 is not there
	mu     sync.Mutex
	keep   bool // keep the bytes; else only count them
	data   []byte
	n      int
	closed bool
	abort  error
}

var (
	blobInstances = []uint16{0}
	blobResources = []Resource{{ID: 0, Type: model.TypeOpaque, Ops: OpWrite}, {ID: 1, Type: model.TypeOpaque, Ops: OpWrite}}
)

func (o *blob) ID() uint16 { return o.id }
func (o *blob) Instances() []uint16 {
	if o.gone.Load() {
		return nil
	}
	return blobInstances
}
func (o *blob) Resources(uint16) []Resource { return blobResources }
func (o *blob) Read(context.Context, model.Path) ([]model.Record, error) {
	return nil, ErrNotFound
}

func (o *blob) OpenStream(context.Context, model.Path, int64) (Stream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.data, o.n, o.closed, o.abort = nil, 0, false, nil
	return blobStream{o}, nil
}

type blobStream struct{ o *blob }

func (s blobStream) Write(b []byte) error {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	if s.o.keep {
		s.o.data = append(s.o.data, b...)
	}
	s.o.n += len(b)
	return nil
}
func (s blobStream) Close() error { s.o.mu.Lock(); s.o.closed = true; s.o.mu.Unlock(); return nil }
func (s blobStream) Abort(err error) {
	s.o.mu.Lock()
	s.o.abort = err
	s.o.mu.Unlock()
}

// peer is a raw CoAP server on loopback: it accepts the Register and then
// sends the client exactly the datagrams a test gives it.
type peer struct {
	tb   testing.TB
	conn *net.UDPConn
	dev  netip.AddrPort // the client's address, from its Register
	mid  uint16
	in   []byte
	msg  message.Message
	out  []byte
}

func newPeer(tb testing.TB) *peer {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &peer{tb: tb, conn: conn, mid: 0x1000, in: make([]byte, 2048), out: make([]byte, 2048),
		msg: message.Message{Options: make(message.Options, 0, 16)}}
}

// startClient runs a client with objs against p and waits for its Register.
func startClient(tb testing.TB, p *peer, objs ...Object) *Client {
	c, err := New(Config{Endpoint: "fast", Server: "coap://" + p.conn.LocalAddr().String(),
		Logger: slog.New(slog.DiscardHandler), Tx: TxParams{AckTimeout: time.Second}})
	if err != nil {
		tb.Fatal(err)
	}
	for _, o := range objs {
		if err := c.AddObject(o); err != nil {
			tb.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		// Answer the De-register.
		for {
			select {
			case <-done:
				return
			default:
			}
			if m := p.read(50 * time.Millisecond); m != nil && m.Code == codes.DELETE {
				p.reply(message.Message{Type: message.Acknowledgement, Code: codes.Deleted, MessageID: m.MessageID, Token: m.Token})
			}
		}
	})
	for {
		m := p.read(10 * time.Second)
		if m == nil {
			tb.Fatal("no Register")
		}
		if m.Code == codes.POST {
			p.reply(message.Message{Type: message.Acknowledgement, Code: codes.Created, MessageID: m.MessageID, Token: m.Token,
				Options: message.Options{{ID: message.LocationPath, Value: []byte("rd")}, {ID: message.LocationPath, Value: []byte("1")}}})
			return c
		}
	}
}

// read returns the next datagram from the client, decoded, or nil after wait.
func (p *peer) read(wait time.Duration) *message.Message {
	p.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(p.in)
		if err != nil {
			return nil
		}
		p.dev = from
		p.msg.Options = p.msg.Options[:0]
		if _, err := coder.DefaultCoder.Decode(p.in[:n], &p.msg); err == nil {
			return &p.msg
		}
	}
}

func (p *peer) reply(m message.Message) {
	n, err := coder.DefaultCoder.Encode(m, p.out)
	if err != nil {
		p.tb.Fatal(err)
	}
	p.send(p.out[:n])
}

func (p *peer) send(b []byte) {
	if _, err := p.conn.WriteToUDPAddrPort(b, p.dev); err != nil {
		p.tb.Fatal(err)
	}
}

// exchange sends m and returns the client's answer with m's message ID.
func (p *peer) exchange(m message.Message) *message.Message {
	p.reply(m)
	for {
		r := p.read(10 * time.Second)
		if r == nil {
			p.tb.Fatalf("no answer to message %d", m.MessageID)
			return nil
		}
		if r.MessageID == m.MessageID && r.Type != message.Confirmable {
			return r
		}
	}
}

func uriPath(p string) message.Options {
	var o message.Options
	mp, err := model.ParsePath(p)
	if err != nil {
		panic(err)
	}
	for _, s := range mp.Segments() {
		o = append(o, message.Option{ID: message.URIPath, Value: []byte(s)})
	}
	return o
}

// putBlock is block num of a PUT of img to path with 1024-byte blocks.
func (p *peer) putBlock(path string, img []byte, num int64, extra ...message.Option) message.Message {
	lo, hi := int(num)*1024, min(int(num+1)*1024, len(img))
	p.mid++
	opts := append(uriPath(path), coapopt.Uint(message.ContentFormat, uint32(content.Opaque)),
		coapopt.Block(message.Block1, blockwise.SZX1024, num, hi < len(img)))
	opts = append(opts, extra...)
	// Options go on the wire in order of their numbers.
	sortOptions(opts)
	return message.Message{Type: message.Confirmable, Code: codes.PUT, MessageID: int32(p.mid),
		Token: []byte{0xB1, byte(num >> 8), byte(num)}, Options: opts, Payload: img[lo:hi]}
}

func sortOptions(o message.Options) {
	for i := 1; i < len(o); i++ {
		for j := i; j > 0 && o[j].ID < o[j-1].ID; j-- {
			o[j], o[j-1] = o[j-1], o[j]
		}
	}
}

func (c *Client) fastCount() int {
	n := 0
	for _, s := range c.currentSessions() {
		s.blocks.mu.Lock()
		n += s.blocks.fastBlocks
		s.blocks.mu.Unlock()
	}
	return n
}

// checkContinue checks a 2.31 for block num of req, in req's block size.
func checkContinue(t *testing.T, req message.Message, r *message.Message, num int64) {
	t.Helper()
	rv, _ := req.Options.GetUint32(message.Block1)
	wantSZX, _, _, _ := blockwise.DecodeBlockOption(rv)
	v, err := r.Options.GetUint32(message.Block1)
	szx, gotNum, more, _ := blockwise.DecodeBlockOption(v)
	if r.Type != message.Acknowledgement || r.Code != codes.Continue || !bytes.Equal(r.Token, req.Token) ||
		err != nil || szx != wantSZX || gotNum != num || !more || len(r.Options) != 1 || len(r.Payload) != 0 {
		t.Fatalf("block %d: got %v %v token %x options %v, want ACK 2.31 token %x Block1 %d/1/%d", num, r.Type, r.Code, r.Token, r.Options, req.Token, num, wantSZX.Size())
	}
}

// pushBlocks puts blocks from..last of img to /4200/0/0 and checks the
// answers: 2.31 for each but the last, 2.04 for the last.
func (p *peer) pushBlocks(t *testing.T, img []byte, from, last int64) {
	t.Helper()
	for num := from; num <= last; num++ {
		req := p.putBlock("/4200/0/0", img, num)
		r := p.exchange(req)
		if num < last {
			checkContinue(t, req, r, num)
		} else if r.Code != codes.Changed {
			t.Fatalf("last block: %v", r.Code)
		}
	}
}

// wantImage checks that the stream was closed holding exactly img.
func (o *blob) wantImage(t *testing.T, img []byte) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed || !bytes.Equal(o.data, img) {
		t.Fatalf("stream closed=%v with %d bytes, want the %d-byte image", o.closed, len(o.data), len(img))
	}
}

func needSock(t testing.TB) {
	c, err := udpsock.Dial(netip.AddrPort{}, netip.MustParseAddrPort("127.0.0.1:9"), time.Second)
	if errors.Is(err, udpsock.ErrUnsupported) {
		t.Skip(err)
	}
	if err == nil {
		c.Close()
	}
}

func image(n int) []byte {
	img := make([]byte, n)
	for i := range img {
		img[i] = byte(i*7 + i>>10)
	}
	return img
}

// The middle blocks of a push take the fast path; the first and last do
// not; the bytes arrive exact; every answer is what the slow path sends.
func TestBlock1FastPath(t *testing.T) {
	needSock(t)
	p := newPeer(t)
	o := &blob{id: 4200, keep: true}
	c := startClient(t, p, o)
	img := image(20*1024 + 100)
	last := int64(20)
	p.pushBlocks(t, img, 0, last)
	if n := c.fastCount(); n != int(last-1) {
		t.Errorf("%d blocks took the fast path, want %d (all but the first and the last)", n, last-1)
	}
	o.wantImage(t, img)
}

// What the fast path does not take gets the slow path's answer, and the
// transfer goes on (or ends) as the slow path decides.
func TestBlock1FastPathLeavesTheRest(t *testing.T) {
	needSock(t)
	img := image(10 * 1024)
	next := func(t *testing.T, p *peer) {
		t.Helper()
		req := p.putBlock("/4200/0/0", img, 3)
		checkContinue(t, req, p.exchange(req), 3)
	}
	for _, tc := range []struct {
		name string
		// send sends something in place of block 3 and checks the
		// answer; then, if the transfer is still alive, block 3.
		send  func(t *testing.T, p *peer, o *blob)
		alive bool
		fast  int // blocks on the fast path from send
	}{
		{"next block", func(t *testing.T, p *peer, o *blob) { next(t, p) }, true, 1},
		{"gap", func(t *testing.T, p *peer, o *blob) {
			if r := p.exchange(p.putBlock("/4200/0/0", img, 4)); r.Code != codes.RequestEntityIncomplete {
				t.Fatalf("block 4 after 2: %v, want 4.08", r.Code)
			}
		}, false, 0},
		{"new message ID for a taken block", func(t *testing.T, p *peer, o *blob) {
			req := p.putBlock("/4200/0/0", img, 2)
			checkContinue(t, req, p.exchange(req), 2)
			next(t, p)
		}, true, 1},
		{"retransmission", func(t *testing.T, p *peer, o *blob) {
			p.mid-- // block 2 again, same message ID and token
			req := p.putBlock("/4200/0/0", img, 2)
			checkContinue(t, req, p.exchange(req), 2)
			next(t, p)
		}, true, 1},
		{"other path", func(t *testing.T, p *peer, o *blob) {
			if r := p.exchange(p.putBlock("/4200/0/1", img, 3)); r.Code != codes.RequestEntityIncomplete {
				t.Fatalf("block 3 to another resource: %v, want 4.08", r.Code)
			}
			next(t, p)
		}, true, 1},
		{"extra option", func(t *testing.T, p *peer, o *blob) {
			req := p.putBlock("/4200/0/0", img, 3, message.Option{ID: message.ETag, Value: []byte{1, 2}})
			checkContinue(t, req, p.exchange(req), 3)
		}, true, 0},
		{"other content format", func(t *testing.T, p *peer, o *blob) {
			req := p.putBlock("/4200/0/0", img, 3)
			req.Options[3] = coapopt.Uint(message.ContentFormat, uint32(content.TextPlain))
			checkContinue(t, req, p.exchange(req), 3) // receive looks at the format of the first block only
		}, true, 0},
		{"block size", func(t *testing.T, p *peer, o *blob) {
			// RFC 7959 §2.5: a smaller block at the next offset is taken,
			// on the fast path; then the 1024-byte blocks go on at 4096.
			for num := int64(6); num <= 7; num++ {
				req := p.putBlock("/4200/0/0", img, 3)
				req.Options[4] = coapopt.Block(message.Block1, blockwise.SZX512, num, true)
				req.Payload = img[num*512 : (num+1)*512]
				checkContinue(t, req, p.exchange(req), num)
			}
		}, true, 2},
		{"block size, wrong offset", func(t *testing.T, p *peer, o *blob) {
			req := p.putBlock("/4200/0/0", img, 3)
			req.Options[4] = coapopt.Block(message.Block1, blockwise.SZX512, 7, true) // offset 3584, 3072 expected
			req.Payload = img[7*512 : 8*512]
			if r := p.exchange(req); r.Code != codes.RequestEntityIncomplete {
				t.Fatalf("512-byte block at a gap: %v, want 4.08", r.Code)
			}
		}, false, 0},
		{"short block", func(t *testing.T, p *peer, o *blob) {
			req := p.putBlock("/4200/0/0", img, 3)
			req.Payload = req.Payload[:100]
			if r := p.exchange(req); r.Code != codes.BadRequest {
				t.Fatalf("short block: %v, want 4.00", r.Code)
			}
			next(t, p)
		}, true, 1},
		{"unknown critical option", func(t *testing.T, p *peer, o *blob) {
			req := p.putBlock("/4200/0/0", img, 3, message.Option{ID: 65001, Value: []byte{1}})
			if r := p.exchange(req); r.Code != codes.BadOption {
				t.Fatalf("unknown critical option: %v, want 4.02", r.Code)
			}
			next(t, p)
		}, true, 1},
		{"non-confirmable", func(t *testing.T, p *peer, o *blob) {
			req := p.putBlock("/4200/0/0", img, 3)
			req.Type = message.NonConfirmable
			p.reply(req)
			for {
				r := p.read(10 * time.Second)
				if r == nil {
					t.Fatal("no answer to a NON block")
				}
				if bytes.Equal(r.Token, req.Token) {
					// go-coap answers a NON request with a confirmable response.
					if r.Code != codes.Continue {
						t.Fatalf("NON block 3: %v %v, want 2.31", r.Type, r.Code)
					}
					if r.Type == message.Confirmable {
						p.reply(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: r.MessageID})
					}
					return
				}
			}
		}, true, 0},
		{"instance gone", func(t *testing.T, p *peer, o *blob) {
			// A Write is checked against the data model on every block.
			o.gone.Store(true)
			if r := p.exchange(p.putBlock("/4200/0/0", img, 3)); r.Code != codes.NotFound {
				t.Fatalf("block to a missing instance: %v, want 4.04", r.Code)
			}
			o.gone.Store(false)
			next(t, p)
		}, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t)
			o := &blob{id: 4200, keep: true}
			c := startClient(t, p, o)
			for num := range int64(3) {
				req := p.putBlock("/4200/0/0", img, num)
				checkContinue(t, req, p.exchange(req), num)
			}
			before := c.fastCount()
			if before != 2 {
				t.Fatalf("%d blocks on the fast path before the test, want 2 (blocks 1 and 2)", before)
			}
			tc.send(t, p, o)
			if fast := c.fastCount() - before; fast != tc.fast {
				t.Errorf("%d blocks on the fast path, want %d", fast, tc.fast)
			}
			if !tc.alive {
				o.mu.Lock()
				aborted := o.abort
				o.mu.Unlock()
				if !errors.Is(aborted, ErrIncomplete) {
					t.Errorf("stream aborted with %v, want ErrIncomplete", aborted)
				}
				return
			}
			p.pushBlocks(t, img, 4, 9)
			o.wantImage(t, img)
		})
	}
}

// A malformed datagram costs a Reset at most; the session goes on.
func TestUDPSessionMalformed(t *testing.T) {
	needSock(t)
	p := newPeer(t)
	o := &blob{id: 4200, keep: true}
	startClient(t, p, o)
	// A confirmable message with a valid header and a payload marker
	// without payload (RFC 7252 §3): a Reset comes back.
	p.send([]byte{0x40, byte(codes.PUT), 0x12, 0x34, 0xFF})
	for {
		r := p.read(10 * time.Second)
		if r == nil {
			t.Fatal("no Reset for a malformed confirmable message")
		}
		if r.Type == message.Reset && r.MessageID == 0x1234 {
			break
		}
	}
	// Garbage without a header, an empty datagram, a wrong version.
	p.send([]byte{0x40})
	p.send(nil)
	p.send([]byte{0x80, 0x01, 0, 1})
	p.pushBlocks(t, image(3*1024), 0, 2)
}

func noHandler(*responsewriter.ResponseWriter[*udpclient.Conn], *pool.Message) {}

// Close wakes the blocked read at once, and Run ends.
func TestUDPSessionClose(t *testing.T) {
	needSock(t)
	p := newPeer(t)
	cc, err := dialUDP(t.Context(), p.conn.LocalAddr().String(), noHandler, TxParams{}.Defaults(), func(error) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cc.Session().(*udpSession); !ok {
		t.Fatalf("session is %T, want *udpSession", cc.Session())
	}
	time.Sleep(10 * time.Millisecond) // let Run block in its read
	start := time.Now()
	cc.Close()
	select {
	case <-cc.Done():
		t.Logf("Run ended %v after Close", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end after Close")
	}
	if err := cc.Session().(*udpSession).write([]byte{0x40, 0, 0, 1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after the end of Run: %v, want net.ErrClosed", err)
	}
}

// An ICMP port unreachable (the server restarting) does not end the
// session: once the server is back, the same connection works.
func TestUDPSessionSurvivesICMP(t *testing.T) {
	needSock(t)
	p := newPeer(t)
	addr := p.conn.LocalAddr().(*net.UDPAddr)
	var icmp atomic.Int32
	errs := func(err error) {
		if udpsock.IsAsyncError(err) {
			icmp.Add(1)
		}
	}
	cc, err := dialUDP(t.Context(), addr.String(), noHandler, TxParams{AckTimeout: 100 * time.Millisecond}.Defaults(), errs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	p.conn.Close()
	// Each ping draws a port unreachable.
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		cc.Ping(ctx)
		cancel()
	}
	if icmp.Load() == 0 {
		t.Fatal("no ICMP error reported")
	}
	if err := cc.Context().Err(); err != nil {
		t.Fatalf("session ended after ICMP errors: %v", err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Skipf("cannot listen on %v again: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	p2 := &peer{tb: t, conn: conn, in: make([]byte, 2048), out: make([]byte, 2048), msg: message.Message{Options: make(message.Options, 0, 16)}}
	go func() {
		// Answer every ping (older ones may still be retransmitted).
		for m := p2.read(10 * time.Second); m != nil; m = p2.read(10 * time.Second) {
			if m.IsPing(false) {
				n, _ := coder.DefaultCoder.Encode(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: m.MessageID}, p2.out)
				conn.WriteToUDPAddrPort(p2.out[:n], p2.dev)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := cc.Ping(ctx); err != nil {
		t.Fatalf("ping after the server came back: %v", err)
	}
}

// BenchmarkBlock1Receive is one middle block of a push per iteration over
// loopback: PUT from a raw peer, the client's 2.31 back. "fast" is the
// read loop's fast path; "slow" adds an ETag, which sends the same block
// through go-coap and the handler instead. The peer allocates nothing.
func BenchmarkBlock1Receive(b *testing.B) {
	needSock(b)
	for _, tc := range []struct {
		name  string
		extra []message.Option
	}{{"fast", nil}, {"slow", []message.Option{{ID: message.ETag, Value: []byte{1}}}}} {
		b.Run(tc.name, func(b *testing.B) {
			p := newPeer(b)
			o := &blob{id: 4200}
			c := startClient(b, p, o)
			blk := make([]byte, 1024)
			opts := make(message.Options, 0, 8)
			token := []byte{0xB1}
			var v [4]byte
			send := func(num int64) {
				p.mid++
				bv, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, true)
				n, _ := message.EncodeUint32(v[:], bv)
				opts = append(opts[:0], benchOpts[:]...)
				opts[4].Value = v[:n]
				opts = append(opts, tc.extra...)
				sortOptions(opts)
				m := message.Message{Type: message.Confirmable, Code: codes.PUT, MessageID: int32(p.mid), Token: token, Options: opts, Payload: blk}
				if r := p.exchange(m); r.Code != codes.Continue {
					b.Fatalf("block %d: %v", num, r.Code)
				}
			}
			send(0)
			b.ReportAllocs()
			b.SetBytes(1024)
			b.ResetTimer()
			for i := range b.N {
				send(int64(i+1) % (1 << 20))
			}
			b.StopTimer()
			if tc.extra == nil && c.fastCount() != b.N {
				b.Fatalf("%d of %d blocks on the fast path", c.fastCount(), b.N)
			}
		})
	}
}

var benchOpts = [5]message.Option{
	{ID: message.URIPath, Value: []byte("4200")},
	{ID: message.URIPath, Value: []byte("0")},
	{ID: message.URIPath, Value: []byte("0")},
	{ID: message.ContentFormat, Value: []byte{byte(content.Opaque)}},
	{ID: message.Block1},
}

// An idle session waits in the netpoller: a fleet of clients in one
// process does not hold an OS thread each.
func TestIdleSessionsHoldNoThread(t *testing.T) {
	needSock(t)
	threads := func() int {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Skip("no /proc/self/status")
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				return n
			}
		}
		t.Skip("no thread count in /proc/self/status")
		return 0
	}
	p := newPeer(t)
	before := threads()
	const n = 64
	for range n {
		cc, err := dialUDP(t.Context(), p.conn.LocalAddr().String(), noHandler, TxParams{}.Defaults(), func(error) {}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if _, ok := cc.Session().(*udpSession); !ok {
			t.Fatalf("session is %T, want *udpSession", cc.Session())
		}
	}
	time.Sleep(100 * time.Millisecond) // every Run is in its read
	if grown := threads() - before; grown >= n/4 {
		t.Fatalf("%d idle sessions added %d threads", n, grown)
	}
}

package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/lwm2m-fota/lwm2m/coaptx"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
)

// A push over plain UDP runs a stop-and-wait Block1 loop (RFC 7959 §2.5)
// on a socket connected to the device and bound to the listener's port
// (udpsock.ReusePort), read with blocking system calls. Through go-coap
// every block would cross the listener's read loop, the session, the
// response channel and the pushing goroutine, each a netpoller wake-up;
// here one goroutine writes a block and reads its answer.
//
// While the socket exists Linux delivers all of the device's datagrams to
// it, not to the listener. Those that are not the answer to the current
// block (notifications, Updates, retransmissions, answers to requests of
// other goroutines) go to the device's go-coap connection as if its
// listener had read them; go-coap answers through the listener, which
// has the same address.

// pushSender returns the fast sender for ep when it can have one, else
// the go-coap one.
func (s *Server) pushSender(ctx context.Context, ep string) block1Sender {
	p, err := s.dialPush(ctx, ep)
	if err != nil {
		s.logger().Debug("push over go-coap", "ep", ep, "why", err)
		return coapSender{s: s, ep: ep}
	}
	return p
}

// sockPush sends the blocks of one push over its own socket.
type sockPush struct {
	s       *Server
	ep      string
	cc      *udpclient.Conn
	sock    *udpsock.Conn
	tx      coaptx.Params
	quit    chan struct{}
	token   [8]byte // a random prefix from go-coap, then a counter (RFC 7252 §5.3.1)
	seq     uint32
	opts    message.Options
	optBuf  [12]byte
	out, in []byte
	msg     message.Message
}

func (s *Server) dialPush(ctx context.Context, ep string) (*sockPush, error) {
	reg, ok := s.Registration(ep)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotRegistered, ep)
	}
	if reg.Secure {
		return nil, errors.New("device is on DTLS")
	}
	cc, err := s.conn(ep)
	if err != nil {
		return nil, err
	}
	ra, ok := cc.RemoteAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("remote address %v is not UDP", cc.RemoteAddr())
	}
	raddr := netip.AddrPortFrom(ra.AddrPort().Addr().Unmap(), ra.AddrPort().Port())
	s.mu.Lock()
	l := s.lis
	s.mu.Unlock()
	la, ok := l.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("listener address %v is not UDP", l.LocalAddr())
	}
	// On a wildcard listener the socket binds to the address the device
	// registered to, which its datagrams come from (a device's socket
	// connected to the server takes nothing from another address), or,
	// not knowing it, to the wildcard of the device's family, and
	// connect(2) picks the source address by route.
	laddr := la.AddrPort()
	if laddr.Addr().IsUnspecified() {
		wild := netip.IPv6Unspecified()
		if raddr.Addr().Is4() {
			wild = netip.IPv4Unspecified()
		}
		if ip, ok := hostIP(reg.Local); ok && ip.Is4() == raddr.Addr().Is4() {
			wild = ip
		}
		laddr = netip.AddrPortFrom(wild, laddr.Port())
	}
	tx := s.tx.Defaults()
	dial := s.pushDial
	if dial == nil {
		dial = udpsock.Dial
	}
	sock, err := dial(laddr, raddr, udpsock.Tick(tx.AckTimeout))
	if err != nil {
		return nil, err
	}
	tok, err := cc.GetToken()
	if err != nil {
		sock.Close()
		return nil, err
	}
	p := &sockPush{s: s, ep: ep, cc: cc, sock: sock, tx: tx, quit: make(chan struct{}),
		out: make([]byte, 1280), in: make([]byte, 1<<16),
		opts: make(message.Options, 0, 8), msg: message.Message{Options: make(message.Options, 0, 32)}}
	copy(p.token[:4], tok)
	// A blocking read does not watch ctx: wake it when the push ends.
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		case <-p.quit:
			return
		}
		sock.Interrupt()
	}()
	return p, nil
}

func (p *sockPush) close() {
	close(p.quit)
	p.drain()
	p.sock.Close()
}

// drainFor is how long the end of a push waits for datagrams in flight.
const drainFor = 2 * time.Millisecond

// drain hands what the device sent after the last answer to go-coap. The
// device notifies the State it reached (Downloaded) as it answers the
// last block; until this socket is closed, Linux queues that notification
// here, not at the listener, and closing the socket would drop it, which
// costs a retransmission (ACK_TIMEOUT, 2-3 s) before the server learns the
// State. A datagram that comes after the drain goes to the listener.
func (p *sockPush) drain() {
	deadline := time.Now().Add(drainFor)
	for {
		n, src, err := p.sock.ReadFrom(p.in, deadline)
		if err != nil || n == 0 {
			return
		}
		if src != p.sock.RemoteAddr() {
			continue
		}
		m := &p.msg
		m.Options = m.Options[:0]
		if _, err := coder.DefaultCoder.Decode(p.in[:n], m); err == nil && p.ours(m.Token) {
			continue // a late answer to a block of this push
		}
		p.forward(p.in[:n])
	}
}

// forward gives dgram to go-coap, as its listener would have read it.
func (p *sockPush) forward(dgram []byte) {
	if err := p.cc.Process(nil, dgram); err != nil {
		p.s.logger().Debug("push: go-coap could not process a datagram", "ep", p.ep, "err", err)
	}
}

// stopped reports why a read returned nothing: the push's context ended
// or the server closed. nil means an empty datagram.
func (p *sockPush) stopped(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-p.s.done:
		return ErrClosed
	default:
		return nil
	}
}

// put sends b as a confirmable PUT and waits for its answer, retransmitting
// with exponential back-off (RFC 7252 §4.2). An empty ACK means a separate
// response follows (§5.2.2); it must come within the request timeout.
func (p *sockPush) put(ctx context.Context, b *block1) (block1Answer, error) {
	p.seq++
	binary.BigEndian.PutUint32(p.token[4:], p.seq)
	mid := uint16(p.cc.GetMessageID())
	out, err := p.encode(b, mid)
	if err != nil {
		return block1Answer{}, p.errorf("%w", err)
	}
	now := time.Now()
	deadline := now.Add(p.s.requestTimeout())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	timeout := time.Duration(float64(p.tx.AckTimeout) * (1 + rand.Float64()*(p.tx.AckRandomFactor-1)))
	next := now.Add(timeout)
	acked := false
	retransmits := 0
	if err := p.send(out); err != nil {
		return block1Answer{}, err
	}
	for {
		wait := next
		if acked || deadline.Before(wait) {
			wait = deadline
		}
		n, src, err := p.sock.ReadFrom(p.in, wait)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			now := time.Now()
			if !now.Before(deadline) {
				if err := p.stopped(ctx); err != nil {
					return block1Answer{}, err
				}
				return block1Answer{}, p.errorf("no answer to block %d: %w", b.num, context.DeadlineExceeded)
			}
			if now.Before(next) {
				continue
			}
			if retransmits >= p.tx.MaxRetransmit {
				return block1Answer{}, p.errorf("no answer to block %d after %d retransmissions: %w", b.num, retransmits, context.DeadlineExceeded)
			}
			retransmits++
			timeout *= 2
			next = now.Add(timeout)
			if err := p.send(out); err != nil {
				return block1Answer{}, err
			}
			continue
		case udpsock.IsAsyncError(err):
			continue // an ICMP error for an earlier datagram: to CoAP, a loss
		case err != nil:
			return block1Answer{}, p.errorf("%w", err)
		case n == 0:
			if err := p.stopped(ctx); err != nil {
				return block1Answer{}, err
			}
			continue
		}
		if src != p.sock.RemoteAddr() {
			// Queued between bind and connect: another peer's datagram
			// sent to the listener's port. Dropping it is a loss to whoever
			// sent it, which CoAP over UDP absorbs.
			p.s.logger().Debug("push: dropped a datagram from another peer", "ep", p.ep, "from", src, "len", n)
			continue
		}
		a, done, err := p.accept(p.in[:n], mid, b.szx, &acked)
		if err != nil || done {
			return a, err
		}
	}
}

// accept looks at one datagram from the device. It returns done with the
// answer when the datagram answers the current request.
func (p *sockPush) accept(dgram []byte, mid uint16, szx blockwise.SZX, acked *bool) (block1Answer, bool, error) {
	m := &p.msg
	m.Options = m.Options[:0]
	_, err := coder.DefaultCoder.Decode(dgram, m)
	if err == nil && uint16(m.MessageID) == mid {
		switch {
		case m.Type == message.Reset:
			return block1Answer{}, false, p.errorf("the device reset the request")
		case m.Type == message.Acknowledgement && m.Code == codes.Empty:
			*acked = true
			return block1Answer{}, false, nil
		case m.Type == message.Acknowledgement && p.isAnswer(m):
			return parseBlock1Answer(m.Code, m.Options, szx), true, nil
		}
	}
	if err == nil && isResponse(m.Code) && p.ours(m.Token) {
		// A separate response to this or an earlier block, possibly a
		// retransmission: acknowledge it (RFC 7252 §5.2.2).
		if m.Type == message.Confirmable {
			ack := [4]byte{0x60, 0, byte(m.MessageID >> 8), byte(m.MessageID)}
			if err := p.send(ack[:]); err != nil {
				return block1Answer{}, false, err
			}
		}
		if m.Type != message.Acknowledgement && p.isAnswer(m) {
			return parseBlock1Answer(m.Code, m.Options, szx), true, nil
		}
		return block1Answer{}, false, nil // a late answer to an earlier block
	}
	// Anything else is for go-coap, as its listener would have read it.
	p.forward(dgram)
	return block1Answer{}, false, nil
}

// isAnswer reports whether m carries the current request's token.
func (p *sockPush) isAnswer(m *message.Message) bool {
	return isResponse(m.Code) && bytes.Equal(m.Token, p.token[:])
}

// ours reports whether tok is a token of this push.
func (p *sockPush) ours(tok []byte) bool {
	return len(tok) == len(p.token) && bytes.Equal(tok[:4], p.token[:4])
}

func isResponse(c codes.Code) bool { return c>>5 >= 2 && c>>5 <= 5 }

// encode builds the PUT of b into p.out. Options go in number order
// (RFC 7252 §3.1): Uri-Path 11, Content-Format 12, Block1 27, Size1 60.
func (p *sockPush) encode(b *block1, mid uint16) ([]byte, error) {
	bv, err := blockwise.EncodeBlockOption(b.szx, b.num, b.more)
	if err != nil {
		return nil, err
	}
	p.opts = append(p.opts[:0],
		message.Option{ID: message.URIPath, Value: segment5},
		message.Option{ID: message.URIPath, Value: segment0},
		message.Option{ID: message.URIPath, Value: segment0},
		message.Option{ID: message.ContentFormat, Value: coapopt.PutUint(p.optBuf[0:4], uint32(message.AppOctets))},
		message.Option{ID: message.Block1, Value: coapopt.PutUint(p.optBuf[4:8], bv)},
	)
	if b.num == 0 {
		p.opts = append(p.opts, message.Option{ID: message.Size1, Value: coapopt.PutUint(p.optBuf[8:12], uint32(min(b.total, 1<<32-1)))})
	}
	req := message.Message{Token: p.token[:], Options: p.opts, Code: codes.PUT,
		MessageID: int32(mid), Type: message.Confirmable, Payload: b.payload}
	n, err := coder.DefaultCoder.Encode(req, p.out)
	if errors.Is(err, message.ErrTooSmall) {
		p.out = make([]byte, n)
		n, err = coder.DefaultCoder.Encode(req, p.out)
	}
	if err != nil {
		return nil, err
	}
	return p.out[:n], nil
}

var segment5, segment0 = []byte("5"), []byte("0")

// send writes one datagram. An ICMP error for an earlier one is, like a
// lost datagram, for retransmission to deal with.
func (p *sockPush) send(b []byte) error {
	if err := p.sock.Write(b); err != nil && !udpsock.IsAsyncError(err) {
		return p.errorf("%w", err)
	}
	return nil
}

func (p *sockPush) errorf(format string, args ...any) error {
	return fmt.Errorf("server: push %s on %s: "+format, append([]any{pathPackage, p.ep}, args...)...)
}

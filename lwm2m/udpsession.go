package lwm2m

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	netclient "github.com/plgd-dev/go-coap/v3/net/client"
	"github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// udpSession is a go-coap udp/client.Session over a udpsock.Conn: a
// connected socket read with blocking system calls, outside Go's
// netpoller (see package udpsock for why). It follows go-coap's
// udp/server.Session; Run is the read loop, and offers each datagram to
// fast before go-coap sees it.
type udpSession struct {
	sock           *udpsock.Conn
	laddr, raddr   *net.UDPAddr
	maxMessageSize uint32
	mtu            uint16
	errs           func(error)
	fast           *block1Fast // nil: every datagram goes to go-coap

	base       context.Context // cancelled by Close
	cancel     context.CancelFunc
	ctx        atomic.Pointer[context.Context] // base with SetContextValue's values
	done       context.Context                 // cancelled when Run has ended
	doneCancel context.CancelFunc

	mu      sync.Mutex
	onClose []func()

	wmu    sync.RWMutex // writers hold it shared; Run's end closes the socket under it
	closed bool

	io ioSync
}

// sessionTick is how often a blocking read during a transfer wakes to
// see whether the transfer is still running. Close and the end of the
// context interrupt any read at once.
const sessionTick = time.Second

func newUDPSession(ctx context.Context, sock *udpsock.Conn, maxMessageSize uint32, mtu uint16, errs func(error), fast *block1Fast) *udpSession {
	s := &udpSession{
		sock:           sock,
		laddr:          net.UDPAddrFromAddrPort(sock.LocalAddr()),
		raddr:          net.UDPAddrFromAddrPort(sock.RemoteAddr()),
		maxMessageSize: maxMessageSize,
		mtu:            mtu,
		errs:           errs,
		fast:           fast,
	}
	s.base, s.cancel = context.WithCancel(ctx)
	s.done, s.doneCancel = context.WithCancel(context.Background())
	s.ctx.Store(&s.base)
	// Wake the blocked read at once when the session ends.
	context.AfterFunc(s.base, sock.Interrupt)
	return s
}

func (s *udpSession) Context() context.Context { return *s.ctx.Load() }

// SetContextValue stores val under key in the session's context.
func (s *udpSession) SetContextValue(key, val any) {
	ctx := context.WithValue(s.Context(), key, val)
	s.ctx.Store(&ctx)
}

// Close ends the session; Run closes the socket when its read returns.
func (s *udpSession) Close() error {
	s.cancel()
	return nil
}

// Done is closed once Run has ended and the OnClose functions have run.
func (s *udpSession) Done() <-chan struct{} { return s.done.Done() }

func (s *udpSession) AddOnClose(f client.EventFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onClose = append(s.onClose, f)
}

func (s *udpSession) MaxMessageSize() uint32 { return s.maxMessageSize }
func (s *udpSession) RemoteAddr() net.Addr   { return s.raddr }
func (s *udpSession) LocalAddr() net.Addr    { return s.laddr }

// NetConn is a write-only view: the read loop owns the socket's reads.
func (s *udpSession) NetConn() net.Conn { return sessionConn{s} }

func (s *udpSession) WriteMessage(req *pool.Message) error {
	if err := req.Context().Err(); err != nil {
		return err
	}
	data, err := req.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return &netclient.RequestNotSentError{Err: fmt.Errorf("cannot marshal: %w", err)}
	}
	return s.write(data)
}

var errNoMulticast = errors.New("lwm2m: no multicast on a connected socket")

func (s *udpSession) WriteMulticastMessage(*pool.Message, *net.UDPAddr, ...coapnet.MulticastOption) error {
	return errNoMulticast
}

// write sends one datagram; any goroutine may call it.
func (s *udpSession) write(b []byte) error {
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	if s.closed {
		return net.ErrClosed
	}
	s.io.sent()
	err := s.sock.Write(b)
	if udpsock.IsAsyncError(err) {
		// The error was an ICMP report on an earlier datagram that no read
		// had taken yet; Linux drops the datagram that collects it. The
		// session goes on, and the registration starts over only as it
		// does after any timeout.
		s.errs(fmt.Errorf("%v: %w", s.raddr, err))
		err = s.sock.Write(b)
	}
	return err
}

// Run reads datagrams until the session is closed. What fast does not
// answer goes to cc.Process as in go-coap's own session, which also
// decides what a bad datagram costs: nothing beyond an error report, or a
// Reset for a malformed confirmable message.
func (s *udpSession) Run(cc *client.Conn) error {
	defer s.shutdown()
	// Idle, a datagram is read into small when it fits; the size of the
	// next one is peeked first, so that a larger request, up to
	// maxMessageSize (a Write of a long Package URI, of a whole object
	// instance), is read whole into a buffer of its size and answered,
	// not dropped, while an idle session keeps no large buffer. During a
	// transfer, a buffer for any datagram is held. One extra byte: a
	// datagram over maxMessageSize is detected, not truncated.
	small := make([]byte, int(s.mtu)+1)
	var big []byte
	for {
		var n int
		var err error
		buf := small
		if s.fast != nil && s.fast.busy() {
			// Blocks of a write are coming: wait for each in a blocking
			// read, which wakes faster than the netpoller (package
			// udpsock). It holds an OS thread, so only while a transfer
			// runs; the deadline makes the loop look again.
			if big == nil {
				big = make([]byte, int(s.maxMessageSize)+1)
			}
			buf = big
			n, err = s.sock.Read(buf, time.Now().Add(sessionTick))
		} else {
			// Idle: wait in the netpoller, which holds no thread, so that
			// a fleet of clients in one process costs no thread each.
			big = nil
			if n, err = s.sock.PeekIdle(); err == nil && n >= len(small) {
				buf = make([]byte, min(n, int(s.maxMessageSize))+1)
			}
			if err == nil {
				n, err = s.sock.ReadIdle(buf)
			}
		}
		s.io.received()
		if s.base.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case udpsock.IsAsyncError(err):
			s.errs(fmt.Errorf("%v: %w", s.raddr, err))
			continue
		case err != nil:
			return err
		case uint32(n) > s.maxMessageSize:
			s.errs(fmt.Errorf("max message size(%v) was exceeded %v", s.maxMessageSize, n))
			continue
		}
		dgram := buf[:n]
		if s.fast != nil {
			if ok, err := s.fast.serve(dgram, s.write); ok {
				if err != nil {
					// go-coap too ends the connection when it cannot answer.
					return fmt.Errorf("cannot write response: %w", err)
				}
				continue
			}
		}
		if err := cc.Process(nil, dgram); err != nil {
			var bad *client.MalformedMessageError
			if !errors.As(err, &bad) {
				return err
			}
			s.rejectMalformed(bad)
		}
	}
}

// rejectMalformed answers a malformed confirmable message whose header
// could be parsed with a Reset (RFC 7252 §4.2); unknown versions are
// ignored silently (§3).
func (s *udpSession) rejectMalformed(bad *client.MalformedMessageError) {
	if bad.InvalidVersion {
		return
	}
	s.errs(fmt.Errorf("%v: dropping malformed packet: %w", s.raddr, bad))
	if !bad.HasHeader || bad.Type != message.Confirmable {
		return
	}
	var rst [4]byte
	n, err := coder.DefaultCoder.Encode(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: bad.MessageID}, rst[:])
	if err != nil {
		return
	}
	if err := s.write(rst[:n]); err != nil {
		s.errs(fmt.Errorf("%v: cannot send reset for malformed confirmable packet: %w", s.raddr, err))
	}
}

// shutdown closes the socket once no write uses it, then runs the
// OnClose functions.
func (s *udpSession) shutdown() {
	s.cancel()
	s.wmu.Lock()
	s.closed = true
	s.sock.Close()
	s.wmu.Unlock()
	s.mu.Lock()
	fs := s.onClose
	s.onClose = nil
	s.mu.Unlock()
	for _, f := range fs {
		f()
	}
	s.doneCancel()
}

// sessionConn is the net.Conn of a udpSession. Reads and deadlines are
// not supported: Run reads, and writes are plain blocking system calls.
type sessionConn struct{ s *udpSession }

func (c sessionConn) Read([]byte) (int, error) { return 0, errors.ErrUnsupported }
func (c sessionConn) Write(b []byte) (int, error) {
	if err := c.s.write(b); err != nil {
		return 0, err
	}
	return len(b), nil
}
func (c sessionConn) Close() error                     { return c.s.Close() }
func (c sessionConn) LocalAddr() net.Addr              { return c.s.laddr }
func (c sessionConn) RemoteAddr() net.Addr             { return c.s.raddr }
func (c sessionConn) SetDeadline(time.Time) error      { return errors.ErrUnsupported }
func (c sessionConn) SetReadDeadline(time.Time) error  { return errors.ErrUnsupported }
func (c sessionConn) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }

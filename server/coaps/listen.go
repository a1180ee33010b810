package coaps

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pion/transport/v5/deadline"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
)

// pion/dtls drops, without a word, every record whose record-layer
// version is neither DTLS 1.0 {254,255} nor DTLS 1.2 {254,253}, the
// first ClientHello included. But a ClientHello's record version means
// nothing: RFC 6347 §4.2.1 lets a client use DTLS 1.0 there whatever it
// offers, and RFC 5246 App. E.1 tells servers to accept any value in it.
// mbed TLS writes its configured minimum there, and a minimum below
// DTLS 1.0 (Anjay's default) comes out as a version pion refuses; so
// Anjay never registered. pion cannot be told to accept it and its UDP
// demultiplexer is internal, so the coaps port reads datagrams itself
// (helloListener), sets the record version of each epoch-0 ClientHello
// record to DTLS 1.0, and hands the datagrams to pion per peer, as
// pion's own listener does. The negotiated version is the ClientHello's
// client_version, which pion still checks; the record version takes no
// part in the handshake's transcript.

// dtlsVersion10 is the record version a ClientHello gets.
var dtlsVersion10 = [2]byte{254, 255}

// normalizeClientHello rewrites, in place, the record-layer version of
// every epoch-0 handshake record of datagram d that holds a ClientHello,
// unless pion accepts it as it is
// (RFC 6347 §4.1: type 1 byte, version 2, epoch 2, sequence 6, length 2;
// then the handshake header, whose first byte 1 is client_hello). It
// reports how many records it changed. It stops at the first truncated
// record; pion drops that one itself.
func normalizeClientHello(d []byte) int {
	changed := 0
	for len(d) >= 13 {
		n := 13 + (int(d[11])<<8 | int(d[12]))
		if n > len(d) {
			break
		}
		if d[0] == 22 && d[3] == 0 && d[4] == 0 && n > 13 && d[13] == 1 && !pionAccepts(d[1], d[2]) {
			d[1], d[2] = dtlsVersion10[0], dtlsVersion10[1]
			changed++
		}
		d = d[n:]
	}
	return changed
}

// pionAccepts reports whether pion takes a record with this version:
// DTLS 1.0 or 1.2.
func pionAccepts(major, minor byte) bool {
	return major == 254 && (minor == 255 || minor == 253)
}

// isHandshakeRecord reports whether d starts with a DTLS handshake
// record: only such a datagram may open a session (pion's AcceptFilter).
func isHandshakeRecord(d []byte) bool { return len(d) >= 13 && d[0] == 22 }

// AcceptBacklog is how many new peers wait for Accept at most: the room
// for handshakes that a caller adds to its sessions in Listen's maxPeers.
const AcceptBacklog = 128

const (
	helloQueue    = 64   // datagrams waiting for a peer's reader
	helloReadSize = 8192 // pion's receive MTU
)

// helloListener is a dtlsnet.PacketListener over one UDP socket: a
// net.PacketConn per remote address, fed by one read loop.
type helloListener struct {
	pc     net.PacketConn
	log    *slog.Logger
	max    int // peers at most: sessions and handshakes under way
	accept chan *helloConn
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	conns  map[string]*helloConn
}

func newHelloListener(pc net.PacketConn, log *slog.Logger, maxPeers int) *helloListener {
	l := &helloListener{pc: pc, log: log, max: maxPeers, accept: make(chan *helloConn, AcceptBacklog),
		done: make(chan struct{}), conns: make(map[string]*helloConn)}
	go l.read()
	return l
}

func (l *helloListener) read() {
	buf := make([]byte, helloReadSize)
	for {
		n, raddr, err := l.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.Close()
				return
			}
			continue
		}
		d := buf[:n]
		if k := normalizeClientHello(d); k > 0 {
			l.log.Debug("accepted a ClientHello with another record version", "addr", raddr, "records", k)
		}
		l.deliver(raddr, append([]byte(nil), d...))
	}
}

// deliver queues d for raddr's conn, opening one for a handshake record.
func (l *helloListener) deliver(raddr net.Addr, d []byte) {
	key := raddr.String()
	l.mu.Lock()
	c, ok := l.conns[key]
	if !ok {
		if !isHandshakeRecord(d) {
			l.mu.Unlock()
			l.log.Debug("dropped a datagram: no session and not a handshake", "addr", raddr, "len", len(d))
			return
		}
		if len(l.conns) >= l.max {
			// Each peer holds a goroutine for up to the handshake
			// timeout: bound what a flood of ClientHellos can take.
			l.mu.Unlock()
			l.log.Debug("dropped a handshake: too many peers", "addr", raddr, "max", l.max)
			return
		}
		c = &helloConn{l: l, raddr: raddr, key: key, in: make(chan []byte, helloQueue),
			closed: make(chan struct{}), rd: deadline.New()}
		select {
		case l.accept <- c:
			l.conns[key] = c
		default:
			l.mu.Unlock()
			l.log.Debug("dropped a handshake: too many waiting", "addr", raddr)
			return
		}
	}
	l.mu.Unlock()
	select {
	case c.in <- d:
	default:
		l.log.Debug("dropped a datagram: reader behind", "addr", raddr)
	}
}

// Accept returns the next new peer.
func (l *helloListener) Accept() (net.PacketConn, net.Addr, error) {
	select {
	case c := <-l.accept:
		return c, c.raddr, nil
	case <-l.done:
		return nil, nil, coapnet.ErrListenerIsClosed
	}
}

// Close closes the socket and every peer's conn.
func (l *helloListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.pc.Close()
		l.mu.Lock()
		conns := l.conns
		l.conns = map[string]*helloConn{}
		l.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return err
}

// Addr is the socket's address.
func (l *helloListener) Addr() net.Addr { return l.pc.LocalAddr() }

// helloConn is one peer's view of the socket.
type helloConn struct {
	l      *helloListener
	raddr  net.Addr
	key    string
	in     chan []byte
	closed chan struct{}
	once   sync.Once
	rd     *deadline.Deadline
}

func (c *helloConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.in:
		return copy(b, d), c.raddr, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	case <-c.rd.Done():
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (c *helloConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.l.pc.WriteTo(b, c.raddr)
}

func (c *helloConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.l.mu.Lock()
		if c.l.conns[c.key] == c {
			delete(c.l.conns, c.key)
		}
		c.l.mu.Unlock()
	})
	return nil
}

func (c *helloConn) LocalAddr() net.Addr { return c.l.pc.LocalAddr() }

// SetDeadline sets the read deadline; writes do not block.
func (c *helloConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline sets when a waiting ReadFrom gives up; pion's context
// reads rely on a past deadline to wake one.
func (c *helloConn) SetReadDeadline(t time.Time) error {
	c.rd.Set(t)
	return nil
}

// SetWriteDeadline does nothing: a UDP write does not block.
func (c *helloConn) SetWriteDeadline(time.Time) error { return nil }

// peers returns how many peers have a conn on the socket.
func (l *helloListener) peers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

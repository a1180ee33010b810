package download

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
)

// datagramConn carries whole CoAP datagrams to and from one server.
type datagramConn interface {
	send(b []byte) error
	// recv reads one datagram into b. It returns an error wrapping
	// os.ErrDeadlineExceeded once deadline has passed with nothing read,
	// whatever the transport's own timeout error.
	// A zero-length read is possible and carries no message.
	recv(b []byte, deadline time.Time) (int, error)
	// interrupt makes a pending or later recv return soon; it may be
	// called from any goroutine, also after close.
	interrupt()
	// close releases the connection; it is called once, by the reader.
	close() error
}

// netDatagram adapts a net.Conn that preserves message boundaries (DTLS).
type netDatagram struct {
	conn     net.Conn
	deadline time.Time // the read deadline last set, to skip repeats
}

func (d *netDatagram) send(b []byte) error {
	_, err := d.conn.Write(b)
	return err
}

func (d *netDatagram) recv(b []byte, deadline time.Time) (int, error) {
	if !deadline.Equal(d.deadline) {
		if err := d.conn.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		d.deadline = deadline
	}
	n, err := d.conn.Read(b)
	if err != nil && isTimeout(err) {
		return 0, os.ErrDeadlineExceeded
	}
	return n, err
}

// isTimeout reports whether err says a read deadline passed. pion/dtls
// does not wrap os.ErrDeadlineExceeded but returns its own TimeoutError,
// a net.Error whose Timeout is true; the session stays usable, and a
// lost datagram over DTLS is retransmitted like one over UDP (RFC 7252
// §4.2), not answered with a new handshake.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func (d *netDatagram) interrupt()   { d.conn.Close() }
func (d *netDatagram) close() error { return d.conn.Close() }

// dialUDP connects a UDP socket to hostport, resolved and chosen by a
// net.Dialer, then moved outside Go's netpoller (udpsock.Replace) where
// the platform allows; else the net.Conn serves.
func dialUDP(ctx context.Context, hostport string, tx TxParams, r *net.Resolver) (datagramConn, error) {
	d := net.Dialer{Resolver: r}
	conn, err := d.DialContext(ctx, "udp", hostport)
	if err != nil {
		return nil, transient(fmt.Errorf("download: dial %s: %w", hostport, err))
	}
	c, err := udpsock.Replace(conn.(*net.UDPConn), udpsock.Tick(tx.AckTimeout))
	if err != nil {
		return &netDatagram{conn: conn}, nil
	}
	return sockDatagram{c}, nil
}

// sockDatagram adapts a udpsock.Conn.
type sockDatagram struct{ c *udpsock.Conn }

func (d sockDatagram) send(b []byte) error                            { return d.c.Write(b) }
func (d sockDatagram) recv(b []byte, deadline time.Time) (int, error) { return d.c.Read(b, deadline) }
func (d sockDatagram) interrupt()                                     { d.c.Interrupt() }
func (d sockDatagram) close() error                                   { return d.c.Close() }

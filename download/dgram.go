package download

import (
	"errors"
	"net"
	"os"
	"time"
)

// datagramConn carries whole CoAP datagrams to and from one server.
type datagramConn interface {
	send(b []byte) error
	// recv reads one datagram into b. It returns an error wrapping
	// os.ErrDeadlineExceeded once deadline has passed with nothing read.
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
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, os.ErrDeadlineExceeded
	}
	return n, err
}

func (d *netDatagram) interrupt()   { d.conn.Close() }
func (d *netDatagram) close() error { return d.conn.Close() }

// pollTick is how often a blocking UDP read wakes up to look at its
// deadline: fine enough for retransmission timing, rare enough to cost
// nothing while a response is awaited.
func pollTick(tx TxParams) time.Duration {
	return min(max(tx.AckTimeout/8, time.Millisecond), 50*time.Millisecond)
}

// Package udpsock is a connected UDP socket that Go's netpoller never
// sees: it is read and written with blocking system calls.
//
// Stop-and-wait CoAP spends its life waiting for one datagram. Through the
// netpoller every datagram costs an epoll_wait, a failed first read, a
// goroutine park and wake-up, and often a futex wake of an idle runtime
// thread on the core the peer needs. A blocking read costs one system call.
// The Block2 download loop (package download), the client's Block1 receive
// path (package lwm2m) and the server's push (package server) use it.
package udpsock

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// ErrUnsupported is returned by Dial where the platform has no
// implementation; callers fall back to a net.Conn.
var ErrUnsupported = errors.New("udpsock: not supported on this platform")

// Replace connects a Conn to the peer of uc, which a net.Dialer chose
// (name resolution and address selection stay the standard library's),
// and closes uc. On error uc is left open for the caller to use instead.
func Replace(uc *net.UDPConn, tick time.Duration) (*Conn, error) {
	c, err := Dial(netip.AddrPort{}, uc.RemoteAddr().(*net.UDPAddr).AddrPort(), tick)
	if err != nil {
		return nil, err
	}
	uc.Close()
	return c, nil
}

// IsAsyncError reports an error that a connected UDP socket returns for an
// ICMP message about an earlier datagram: the peer's port closed while it
// restarts, a route that came and went. It may be stale or spoofed and
// says nothing about the next datagram, so to CoAP over UDP it is a lost
// datagram: retransmission (RFC 7252 §4.2) decides when an exchange has
// failed. On Linux the call that collects it drops nothing else.
func IsAsyncError(err error) bool {
	for _, e := range []syscall.Errno{syscall.ECONNREFUSED, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.EMSGSIZE} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Tick returns how often a blocking read wakes up to look at its deadline
// when the acknowledgement timeout is ackTimeout: fine enough for
// retransmission timing (RFC 7252 §4.2), rare enough to cost nothing.
func Tick(ackTimeout time.Duration) time.Duration {
	return min(max(ackTimeout/8, time.Millisecond), 50*time.Millisecond)
}

//go:build !linux

package udpsock

import (
	"net/netip"
	"syscall"
	"time"
)

// Conn is not implemented on this platform; Dial returns ErrUnsupported.
type Conn struct {
	tick   time.Duration
	noSpin bool
}

func Dial(laddr, raddr netip.AddrPort, tick time.Duration) (*Conn, error) {
	return nil, ErrUnsupported
}

// ReusePort does nothing here: Dial cannot share a listener's port.
func ReusePort(_, _ string, _ syscall.RawConn) error { return nil }

func (c *Conn) LocalAddr() netip.AddrPort                      { return netip.AddrPort{} }
func (c *Conn) RemoteAddr() netip.AddrPort                     { return netip.AddrPort{} }
func (c *Conn) Write(b []byte) error                           { return ErrUnsupported }
func (c *Conn) Read(b []byte, deadline time.Time) (int, error) { return 0, ErrUnsupported }
func (c *Conn) ReadFrom(b []byte, deadline time.Time) (int, netip.AddrPort, error) {
	return 0, netip.AddrPort{}, ErrUnsupported
}
func (c *Conn) ReadIdle(b []byte) (int, error) { return 0, ErrUnsupported }
func (c *Conn) PeekIdle() (int, error)         { return 0, ErrUnsupported }
func (c *Conn) Interrupt()                     {}
func (c *Conn) Close() error                   { return nil }

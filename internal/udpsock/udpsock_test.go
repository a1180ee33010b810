package udpsock_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
)

func dial(t *testing.T, laddr, raddr netip.AddrPort) *udpsock.Conn {
	t.Helper()
	c, err := udpsock.Dial(laddr, raddr, 5*time.Millisecond)
	if errors.Is(err, udpsock.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func listen(t *testing.T, lc net.ListenConfig, addr string) *net.UDPConn {
	t.Helper()
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.(*net.UDPConn)
}

func TestRoundTripDeadlineInterrupt(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			peer := listen(t, net.ListenConfig{}, addr)
			c := dial(t, netip.AddrPort{}, peer.LocalAddr().(*net.UDPAddr).AddrPort())
			if err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 64)
			n, from, err := peer.ReadFromUDPAddrPort(b)
			if err != nil || string(b[:n]) != "ping" || from != c.LocalAddr() {
				t.Fatalf("peer got %q from %v (local %v): %v", b[:n], from, c.LocalAddr(), err)
			}
			peer.WriteToUDPAddrPort([]byte("pong"), from)
			n, err = c.Read(b, time.Now().Add(5*time.Second))
			if err != nil || string(b[:n]) != "pong" {
				t.Fatalf("Read = %q, %v", b[:n], err)
			}
			peer.WriteToUDPAddrPort([]byte("again"), from)
			n, src, err := c.ReadFrom(b, time.Now().Add(5*time.Second))
			if want := peer.LocalAddr().(*net.UDPAddr).AddrPort(); err != nil || string(b[:n]) != "again" || src != want {
				t.Fatalf("ReadFrom = %q from %v, %v; want from %v", b[:n], src, err, want)
			}

			// Nothing more comes: the deadline ends the read.
			if _, err := c.Read(b, time.Now().Add(20*time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read past deadline: %v, want ErrDeadlineExceeded", err)
			}

			// Interrupt wakes a read whose deadline is far away.
			interruptWakes(t, c, "Read", func() (int, error) { return c.Read(b, time.Now().Add(time.Hour)) })
		})
	}
}

// A socket connected to one peer on a listener's port gets that peer's
// datagrams; other peers still reach the listener. The server's push
// relies on this.
func TestSharedPortPrefersConnected(t *testing.T) {
	lis := listen(t, net.ListenConfig{Control: udpsock.ReusePort}, "127.0.0.1:0")
	laddr := lis.LocalAddr().(*net.UDPAddr).AddrPort()
	dev := listen(t, net.ListenConfig{}, "127.0.0.1:0")
	other := listen(t, net.ListenConfig{}, "127.0.0.1:0")
	c := dial(t, laddr, dev.LocalAddr().(*net.UDPAddr).AddrPort())
	if c.LocalAddr() != laddr {
		t.Fatalf("LocalAddr = %v, want the listener's %v", c.LocalAddr(), laddr)
	}

	b := make([]byte, 64)
	for i := range 20 {
		dev.WriteToUDPAddrPort([]byte{'d', byte(i)}, laddr)
		n, err := c.Read(b, time.Now().Add(5*time.Second))
		if err != nil || n != 2 || b[0] != 'd' || b[1] != byte(i) {
			t.Fatalf("connected socket read %q, %v", b[:n], err)
		}
	}
	dev.WriteToUDPAddrPort([]byte("f"), laddr)
	n, from, err := c.ReadFrom(b, time.Now().Add(5*time.Second))
	if err != nil || string(b[:n]) != "f" || from != dev.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("ReadFrom = %q from %v, %v; want the device's %v", b[:n], from, err, dev.LocalAddr())
	}
	other.WriteToUDPAddrPort([]byte("o"), laddr)
	lis.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err = lis.ReadFromUDPAddrPort(b)
	if err != nil || string(b[:n]) != "o" || from != other.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("listener read %q from %v: %v", b[:n], from, err)
	}

	// What the connected socket sends comes from the listener's address.
	if err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	dev.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, from, err := dev.ReadFromUDPAddrPort(b); err != nil || from != laddr {
		t.Fatalf("device got a datagram from %v, want %v: %v", from, laddr, err)
	}
}

func TestPacketConn(t *testing.T) {
	peer := listen(t, net.ListenConfig{}, "127.0.0.1:0")
	p := udpsock.NewPacketConn(dial(t, netip.AddrPort{}, peer.LocalAddr().(*net.UDPAddr).AddrPort()))
	if _, err := p.WriteTo([]byte("hi"), nil); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	_, from, _ := peer.ReadFromUDPAddrPort(b)
	peer.WriteToUDPAddrPort([]byte("ho"), from)
	n, addr, err := p.ReadFrom(b)
	if err != nil || string(b[:n]) != "ho" || addr.String() != peer.LocalAddr().String() {
		t.Fatalf("ReadFrom = %q from %v, %v", b[:n], addr, err)
	}

	// A deadline set while a read waits ends it.
	errc := make(chan error, 1)
	go func() { _, _, err := p.ReadFrom(b); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	p.SetReadDeadline(time.Now())
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom after SetReadDeadline: %v, want ErrDeadlineExceeded", err)
	}

	// Close ends a waiting read and later ones.
	p.SetReadDeadline(time.Time{})
	go func() { _, _, err := p.ReadFrom(b); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom during Close: %v, want net.ErrClosed", err)
	}
	if _, _, err := p.ReadFrom(b); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v", err)
	}
}

// ReadIdle and Read take turns on one socket; Interrupt wakes ReadIdle.
func TestReadIdle(t *testing.T) {
	peer := listen(t, net.ListenConfig{}, "127.0.0.1:0")
	c := dial(t, netip.AddrPort{}, peer.LocalAddr().(*net.UDPAddr).AddrPort())
	c.Write([]byte("hello"))
	b := make([]byte, 64)
	_, dev, err := peer.ReadFromUDPAddrPort(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		peer.WriteToUDPAddrPort([]byte{'i', byte(i)}, dev)
		if n, err := c.ReadIdle(b); err != nil || n != 2 || b[1] != byte(i) {
			t.Fatalf("ReadIdle = %q, %v", b[:n], err)
		}
		// Writes work in either mode.
		if err := c.Write([]byte("w")); err != nil {
			t.Fatal(err)
		}
		peer.WriteToUDPAddrPort([]byte{'r', byte(i)}, dev)
		if n, err := c.Read(b, time.Now().Add(5*time.Second)); err != nil || n != 2 || b[1] != byte(i) {
			t.Fatalf("Read after ReadIdle = %q, %v", b[:n], err)
		}
		// Read blocks again: with nothing sent, its deadline ends it.
		if _, err := c.Read(b, time.Now().Add(10*time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read after ReadIdle with nothing to read: %v", err)
		}
	}

	interruptWakes(t, c, "ReadIdle", func() (int, error) { return c.ReadIdle(b) })
}

// interruptWakes checks that c.Interrupt makes a waiting read return 0
// bytes without an error.
func interruptWakes(t *testing.T, c *udpsock.Conn, name string, read func() (int, error)) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		n, err := read()
		if err == nil && n != 0 {
			err = fmt.Errorf("%s read data after Interrupt", name)
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the read wait
	c.Interrupt()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Interrupt did not wake %s", name)
	}
}

// Replace takes over the peer a net.Dialer chose and closes its socket.
func TestReplace(t *testing.T) {
	peer := listen(t, net.ListenConfig{}, "[::1]:0")
	var d net.Dialer
	nc, err := d.DialContext(t.Context(), "udp", peer.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	uc := nc.(*net.UDPConn)
	c, err := udpsock.Replace(uc, 5*time.Millisecond)
	if errors.Is(err, udpsock.ErrUnsupported) {
		uc.Close()
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemoteAddr() != peer.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("connected to %v, want %v", c.RemoteAddr(), peer.LocalAddr())
	}
	if _, err := uc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the dialled socket is still open: %v", err)
	}
}

// PeekIdle tells the size of the next datagram, larger than the caller's
// usual buffer, without taking it; ReadIdle then takes it whole.
func TestPeekIdle(t *testing.T) {
	peer := listen(t, net.ListenConfig{}, "127.0.0.1:0")
	c := dial(t, netip.AddrPort{}, peer.LocalAddr().(*net.UDPAddr).AddrPort())
	if err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	_, from, err := peer.ReadFromUDPAddrPort(b)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20_000)
	for i := range big {
		big[i] = byte(i)
	}
	peer.WriteToUDPAddrPort(big, from)
	for range 2 { // a peek takes nothing
		if n, err := c.PeekIdle(); err != nil || n != len(big) {
			t.Fatalf("PeekIdle = %d, %v; want %d", n, err, len(big))
		}
	}
	got := make([]byte, len(big)+1)
	n, err := c.ReadIdle(got)
	if err != nil || n != len(big) || string(got[:n]) != string(big) {
		t.Fatalf("ReadIdle after PeekIdle = %d bytes, %v; want the %d-byte datagram", n, err, len(big))
	}
	c.Interrupt()
	if n, err := c.PeekIdle(); n != 0 || err != nil {
		t.Fatalf("PeekIdle after Interrupt = %d, %v; want 0, nil", n, err)
	}
}

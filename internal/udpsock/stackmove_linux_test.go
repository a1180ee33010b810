package udpsock_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
)

// ReadFrom reports the sender even when the goroutine's stack moves
// during the read (it grows in the prologue of a call the read makes).
// The kernel writes the sender into memory the read points it at: a
// pointer taken as a uintptr before the stack moved points into the old
// stack, and the sender comes back empty.
func TestReadFromSenderSurvivesStackGrowth(t *testing.T) {
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	from := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	c := dial(t, netip.AddrPort{}, from)
	to := net.UDPAddrFromAddrPort(c.LocalAddr())
	buf := make([]byte, 64)
	// Each depth puts the read at another place in a fresh goroutine's
	// stack, some of them where a call inside the read grows it.
	for depth := 0; depth < 300; depth++ {
		if _, err := peer.WriteToUDP([]byte("x"), to); err != nil {
			t.Fatal(err)
		}
		got := make(chan netip.AddrPort, 1)
		go func() { got <- readAtDepth(c, buf, depth) }()
		if src := <-got; src != from {
			t.Fatalf("depth %d: sender %v, want %v", depth, src, from)
		}
	}
}

//go:noinline
func readAtDepth(c *udpsock.Conn, buf []byte, depth int) netip.AddrPort {
	var pad [40]byte
	if depth > 0 {
		pad[depth%len(pad)] = 1
		src := readAtDepth(c, buf, depth-1)
		if pad[depth%len(pad)] != 1 {
			panic("pad")
		}
		return src
	}
	_, src, err := c.ReadFrom(buf, time.Now().Add(5*time.Second))
	if err != nil {
		return netip.AddrPort{}
	}
	return src
}

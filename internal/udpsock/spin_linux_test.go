package udpsock

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// At most half of GOMAXPROCS reads spin at once.
func TestSpinBudget(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := Dial(netip.AddrPort{}, pc.LocalAddr().(*net.UDPAddr).AddrPort(), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.maxSpinners != 2 {
		t.Fatalf("with GOMAXPROCS 4 a Conn allows %d spinners, want 2", c.maxSpinners)
	}
	base := spinners.Load()
	defer spinners.Store(base)
	spinners.Store(0)
	if !startSpin(c.maxSpinners) || !startSpin(c.maxSpinners) {
		t.Fatal("two spinners refused with GOMAXPROCS 4")
	}
	if startSpin(c.maxSpinners) {
		t.Fatal("a third spinner allowed with GOMAXPROCS 4")
	}
	spinners.Add(-1)
	if !startSpin(c.maxSpinners) {
		t.Fatal("a place given back was not taken again")
	}
}

// Reads stop spinning for a peer that answers later than spinFor, and
// spin again after spinPause reads; the data is right either way.
func TestSpinAdapts(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4)) // room for a spinner on any machine
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := Dial(netip.AddrPort{}, pc.LocalAddr().(*net.UDPAddr).AddrPort(), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The peer echoes each datagram; the first spinMisses late.
	go func() {
		in := make([]byte, 16)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(in)
			if err != nil {
				return
			}
			if n == 1 && int(in[0]) < spinMisses {
				time.Sleep(30 * spinFor) // far away: these reads spin in vain
			}
			pc.WriteToUDPAddrPort(in[:n], from)
		}
	}()
	b := make([]byte, 16)
	for i := range spinMisses + spinPause + 1 {
		if err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(b, time.Now().Add(5*time.Second))
		if err != nil || n != 1 || b[0] != byte(i) {
			t.Fatalf("read %d: %v %v", i, b[:n], err)
		}
		switch {
		case i == spinMisses-1 && c.misses != spinMisses:
			t.Fatalf("after %d slow answers misses = %d, want %d: still spinning", spinMisses, c.misses, spinMisses)
		case i == spinMisses+spinPause-1 && c.misses != 0:
			t.Fatalf("after the pause misses = %d, want 0: spinning does not resume", c.misses)
		}
	}
}

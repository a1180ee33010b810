package coaps

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

func FuzzNormalizeClientHello(f *testing.F) {
	f.Add([]byte{22, 254, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1})
	f.Add([]byte{22, 254, 253, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 23, 254, 253, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, d []byte) {
		orig := append([]byte(nil), d...)
		normalizeClientHello(d)
		for i := range d {
			if d[i] != orig[i] && !(d[i] == 254 || d[i] == 255) {
				t.Fatalf("byte %d changed from %d to %d", i, orig[i], d[i])
			}
		}
		if normalizeClientHello(d) != 0 {
			t.Fatal("not idempotent")
		}
	})
}

// The coaps socket keeps state for a bounded number of peers: a flood of
// ClientHellos from new addresses cannot take more.
func TestHelloListenerPeerCap(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newHelloListener(pc, slog.New(slog.NewTextHandler(io.Discard, nil)), 2)
	defer l.Close()
	hello := []byte{22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}
	var peers []*net.UDPConn
	for range 3 {
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hello)
		peers = append(peers, c)
	}
	// Datagrams are read in order: once the first peer's second
	// datagram is in, the third peer's ClientHello was handled.
	first, _, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	peers[0].Write(hello)
	buf := make([]byte, 64)
	for range 2 {
		first.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := first.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.peers(); n != 2 {
		t.Errorf("%d peers, want the cap 2", n)
	}
}

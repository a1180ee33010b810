package coaps_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
	"github.com/lwm2m-fota/lwm2m/objects"
)

// getManufacturer is a confirmable CoAP GET /3/0/0 (RFC 7252 §3): version
// 1, CON, no token, message ID 0x1234, Uri-Path "3", "0", "0".
var getManufacturer = []byte{0x40, 0x01, 0x12, 0x34, 0xb1, '3', 0x01, '0', 0x01, '0'}

// probe sends datagrams to addr from a fresh socket and reports whether
// anything came back within a second.
func probe(t *testing.T, addr net.Addr, datagrams ...[]byte) bool {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, d := range datagrams {
		if _, err := pc.WriteTo(d, addr); err != nil {
			t.Fatal(err)
		}
	}
	_ = pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return false
	}
	t.Logf("stranger got %d bytes from %v: % x", n, from, buf[:n])
	return true
}

// A request to the client's port from another socket is ignored; the
// client keeps serving its server (LwM2M 1.1 Transport §5.2: only the
// registered server's session may operate on the client).
func TestSecondSocketIgnored(t *testing.T) {
	s := lwm2mtest.Start(t, "")
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "plain-ep", Server: s.URI(), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddObject(objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme"})); err != nil {
		t.Fatal(err)
	}
	run := lwm2mtest.RunClient(t, s, c, "plain-ep")
	readManufacturer(t, run.Conn()) // the request itself is answered to the server

	// The server's view of the client is the client's socket.
	if probe(t, run.Conn().RemoteAddr(), getManufacturer) {
		t.Error("the client answered a request from a socket other than its server's")
	}
	if !c.Registered() {
		t.Error("client lost its registration")
	}
	readManufacturer(t, run.Conn())
}

// Over DTLS, neither a plain CoAP request nor a forged DTLS record from
// another socket gets an answer or tears the session down.
func TestSecondSocketIgnoredDTLS(t *testing.T) {
	s := pskServer(t, nil)
	dial, err := coaps.NewTransport(coaps.Config{Server: s.URI(), PSKIdentity: []byte(testIdentity), PSK: []byte(testKey), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "dtls-ep", s.URI(), dial)
	run := lwm2mtest.RunClient(t, s.Server, c, "dtls-ep")

	// A DTLS 1.2 application-data record, epoch 1, with garbage inside.
	forged := []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 16}
	forged = append(forged, make([]byte, 16)...)
	if probe(t, run.Conn().RemoteAddr(), getManufacturer, forged, []byte("garbage")) {
		t.Error("the client answered a datagram from a socket other than its server's")
	}
	readManufacturer(t, run.Conn())
	if !c.Registered() {
		t.Error("client lost its registration")
	}
}

// relay stands for a NAT between client and server: it forwards the
// client's datagrams from a back socket that rebind replaces, so the
// server sees the client move to a new port.
type relay struct {
	front  *net.UDPConn
	server *net.UDPAddr
	client atomic.Pointer[net.UDPAddr]
	mu     sync.Mutex
	back   *net.UDPConn
}

func startRelay(t *testing.T, server string) *relay {
	t.Helper()
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{front: front, server: sa}
	r.rebind(t)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.client.Store(from)
			r.mu.Lock()
			back := r.back
			r.mu.Unlock()
			_, _ = back.WriteToUDP(buf[:n], r.server)
		}
	}()
	t.Cleanup(func() {
		front.Close()
		r.mu.Lock()
		r.back.Close()
		r.mu.Unlock()
	})
	return r
}

// rebind moves the relay to a new back socket and returns its address.
func (r *relay) rebind(t *testing.T) net.Addr {
	t.Helper()
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	old := r.back
	r.back = back
	r.mu.Unlock()
	if old != nil {
		old.Close() // what the old mapping receives is lost
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			if c := r.client.Load(); c != nil {
				_, _ = r.front.WriteToUDP(buf[:n], c)
			}
		}
	}()
	return back.LocalAddr()
}

// With a Connection ID, a NAT rebinding keeps the DTLS session: the next
// Registration Update arrives from the new address on the same session,
// with no new handshake and no new Register (RFC 9146 §6).
func TestConnectionIDSurvivesRebinding(t *testing.T) {
	var sawCID atomic.Bool
	s := pskServer(t, &sawCID)
	nat := startRelay(t, s.Addr())
	uri := "coaps://" + nat.front.LocalAddr().String()
	dial, err := coaps.NewTransport(coaps.Config{Server: uri, PSKIdentity: []byte(testIdentity), PSK: []byte(testKey), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "cid-ep", uri, dial)
	run := lwm2mtest.RunClient(t, s.Server, c, "cid-ep")
	if !sawCID.Load() {
		t.Fatal("no Connection ID negotiated")
	}
	session := run.Conn()

	moved := nat.rebind(t)
	c.UpdateRegistration()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		reg, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("no Registration Update after the rebinding: %v", err)
		}
		if reg.Endpoint != "cid-ep" {
			continue
		}
		if !reg.Update {
			t.Fatalf("client registered again after the rebinding (%+v)", reg)
		}
		if reg.Conn != session {
			t.Error("the Update arrived on a new DTLS session")
		}
		// pion may hand the record to the server before it moves the
		// peer to the new address (in about 1 run of 40): allow it a
		// moment, not a retransmission.
		if err := waitfor.Poll(time.Second, func() error {
			if got := reg.Conn.RemoteAddr().String(); got != moved.String() {
				return fmt.Errorf("server sees the client at %s, want the new address %s", got, moved)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		break
	}
	readManufacturer(t, session) // the server's answers reach the new address
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("timed out")
	}
}

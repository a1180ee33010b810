package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// helloRelay forwards datagrams between one client and the server's
// DTLS port, rewriting the record-layer version of every epoch-0
// ClientHello record the client sends to ver, as an mbed TLS client
// configured with an old minimum version (Anjay's default) writes it.
type helloRelay struct {
	front  *net.UDPConn // the client talks to this
	server *net.UDPAddr
	ver    [2]byte
	mu     sync.Mutex
	seen   int // ClientHello records rewritten
}

func newHelloRelay(t *testing.T, server net.Addr, ver [2]byte) *helloRelay {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, server.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	r := &helloRelay{front: front, server: server.(*net.UDPAddr), ver: ver}
	t.Cleanup(func() { front.Close(); back.Close() })
	var client *net.UDPAddr
	var cmu sync.Mutex
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			cmu.Lock()
			client = from
			cmu.Unlock()
			r.rewrite(buf[:n])
			back.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			cmu.Lock()
			to := client
			cmu.Unlock()
			if to != nil {
				front.WriteToUDP(buf[:n], to)
			}
		}
	}()
	return r
}

// rewrite walks the DTLS records of a datagram (RFC 6347 §4.1).
func (r *helloRelay) rewrite(d []byte) {
	for len(d) >= 13 {
		n := 13 + (int(d[11])<<8 | int(d[12]))
		if n > len(d) {
			return
		}
		if d[0] == 22 && d[3] == 0 && d[4] == 0 && n > 13 && d[13] == 1 {
			d[1], d[2] = r.ver[0], r.ver[1]
			r.mu.Lock()
			r.seen++
			r.mu.Unlock()
		}
		d = d[n:]
	}
}

// A client whose ClientHello records carry another record-layer version
// than DTLS 1.2's completes the handshake and registers (RFC 6347
// §4.2.1; RFC 5246 App. E.1: a server must not assume a ClientHello's
// record version).
func TestDTLSClientHelloRecordVersion(t *testing.T) {
	s := startDTLSServer(t)
	for _, v := range []struct {
		name string
		ver  [2]byte
	}{{"DTLS 1.0", [2]byte{254, 255}}, {"mbed TLS min SSL 3.0", [2]byte{254, 0}}, {"DTLS 1.1 (none exists)", [2]byte{254, 254}}} {
		t.Run(v.name, func(t *testing.T) {
			r := newHelloRelay(t, s.DTLSLocalAddr(), v.ver)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := dtlsconf.Dial(ctx, r.front.LocalAddr().String(), &dtlsconf.Config{PSKIdentity: []byte("psk-dev"), PSK: testPSK, FlightInterval: 200 * time.Millisecond})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			conn.Close()
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.seen == 0 {
				t.Fatal("the relay rewrote no ClientHello")
			}
		})
	}
}

// A handshake the server drops is logged with the reason (at Debug,
// which -v shows).
func TestDTLSDroppedHandshakeLogged(t *testing.T) {
	var logs syncbuf.Buffer
	s := &Server{DTLSAddr: "127.0.0.1:0", PSKs: map[string][]byte{"psk-dev": testPSK},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	s.handshakeTimeout = time.Second
	startServer(t, s)
	if _, err := dialDTLS(t, s.DTLSLocalAddr().String(), "psk-dev", []byte("not the right key")); err == nil {
		t.Fatal("handshake with a wrong key succeeded")
	}
	waitfor.Until(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "handshake failed") {
			return fmt.Errorf("no handshake failure logged:\n%s", logs.String())
		}
		return nil
	})
	// The failed peer's state on the socket is gone with it.
	waitfor.Until(t, 10*time.Second, func() error {
		if n := s.dtlsLis.Peers(); n != 0 {
			return fmt.Errorf("%d peers left on the socket after a failed handshake", n)
		}
		return nil
	})
}

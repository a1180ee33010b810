package images

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
)

// A Block2 answer is up to 1 KiB for a request of a few dozen bytes: to a
// spoofed source address, a 37-fold reflection (RFC 7252 §11.3). The
// image port therefore sends blocks only to verified addresses: the
// address of a current registration, or one that proved it receives
// this server's datagrams by returning an Echo option (RFC 9175 §2.4).
// Anyone else gets a 4.01 with a fresh Echo, smaller than the request.

// OptionEcho is the Echo option (RFC 9175 §2.2.1): elective, safe to
// forward, up to 40 bytes.
const OptionEcho message.OptionID = 252

const (
	echoLen       = 12               // 4 bytes of time, 8 of MAC
	echoFresh     = 5 * time.Minute  // how long an Echo value may be returned
	verifiedFor   = 10 * time.Minute // how long a returned Echo verifies its address
	maxVerifiedIP = 4096             // bounds the memory an address sprayer can take
)

// echoGate issues and checks Echo values and remembers verified addresses.
type echoGate struct {
	key      [32]byte
	mu       sync.Mutex
	verified map[netip.Addr]time.Time // until when
}

func newEchoGate() *echoGate {
	g := &echoGate{verified: make(map[netip.Addr]time.Time)}
	_, _ = rand.Read(g.key[:])
	return g
}

// mac computes the MAC of an Echo value for ip at time stamp ts.
func (g *echoGate) mac(ip netip.Addr, ts uint32) []byte {
	h := hmac.New(sha256.New, g.key[:])
	var b [20]byte
	binary.BigEndian.PutUint32(b[:4], ts)
	a := ip.Unmap().As16()
	copy(b[4:], a[:])
	h.Write(b[:])
	return h.Sum(nil)[:echoLen-4]
}

// issue writes a fresh Echo value for ip into buf and returns it.
func (g *echoGate) issue(ip netip.Addr, now time.Time, buf []byte) []byte {
	ts := uint32(now.Unix())
	binary.BigEndian.PutUint32(buf[:4], ts)
	copy(buf[4:echoLen], g.mac(ip, ts))
	return buf[:echoLen]
}

// check reports whether ip is verified, either already or by echo, a
// returned Echo value (nil when the request had none).
func (g *echoGate) check(ip netip.Addr, echo []byte, now time.Time) bool {
	ip = ip.Unmap()
	g.mu.Lock()
	until, ok := g.verified[ip]
	g.mu.Unlock()
	if ok && now.Before(until) {
		return true
	}
	if len(echo) != echoLen {
		return false
	}
	ts := binary.BigEndian.Uint32(echo[:4])
	age := now.Sub(time.Unix(int64(ts), 0))
	if age < -time.Second || age > echoFresh || !hmac.Equal(echo[4:], g.mac(ip, ts)) {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.verified) >= maxVerifiedIP {
		for a, u := range g.verified {
			if !now.Before(u) {
				delete(g.verified, a)
			}
		}
		if len(g.verified) >= maxVerifiedIP {
			clear(g.verified)
		}
	}
	g.verified[ip] = now.Add(verifiedFor)
	return true
}

// mayReceiveBlocks reports whether the image port may send a block to
// ip: a loopback address, a registered device's address (the Store's
// Peers say which), or one verified by Echo. A datagram with a loopback source comes from this
// host (Linux drops one that arrives from the wire as a martian, and ::1
// never leaves a node, RFC 4291 §2.5.3), and a local process can flood
// loopback by itself.
func (s *Store) mayReceiveBlocks(ip netip.Addr, echo []byte) bool {
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() && !s.StrictLoopback {
		return true
	}
	if s.peers != nil && s.peers.Registered(ip) {
		return true
	}
	return s.echo.check(ip, echo, time.Now())
}

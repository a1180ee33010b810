package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/lwm2m-fota/lwm2m/coaptx"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/lossy"
	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

// pushOver makes s push over its own socket (lean) or through go-coap,
// as where udpsock is unsupported, and counts the sockets dialed. Call it
// before the server starts.
func pushOver(t *testing.T, s *Server, lean bool) *atomic.Int32 {
	t.Helper()
	if lean {
		c, err := udpsock.Dial(netip.AddrPort{}, netip.MustParseAddrPort("127.0.0.1:9"), time.Millisecond)
		if errors.Is(err, udpsock.ErrUnsupported) {
			t.Skip(err)
		}
		if err == nil {
			c.Close()
		}
	}
	var dialed atomic.Int32
	s.pushDial = func(laddr, raddr netip.AddrPort, tick time.Duration) (*udpsock.Conn, error) {
		if !lean {
			return nil, udpsock.ErrUnsupported
		}
		c, err := udpsock.Dial(laddr, raddr, tick)
		if err == nil {
			dialed.Add(1)
		}
		return c, err
	}
	return &dialed
}

// The block and size logic holds on both transports: exact bytes across
// the file reader's chunks, a smaller block size, a refused size.
func TestPushTransports(t *testing.T) {
	for _, lean := range []bool{true, false} {
		name := map[bool]string{true: "socket", false: "go-coap"}[lean]
		t.Run(name, func(t *testing.T) {
			want := int32(0)
			if lean {
				want = 1
			}
			for _, tc := range []struct {
				size int
				szx  blockwise.SZX
			}{{0, blockwise.SZX1024}, {3 * 1024, blockwise.SZX1024}, {150_000, blockwise.SZX1024}, {150_000, blockwise.SZX256}} {
				t.Run(fmt.Sprintf("%d-bytes-szx%d", tc.size, tc.szx), func(t *testing.T) {
					s := &Server{}
					dialed := pushOver(t, s, lean)
					startServer(t, s)
					d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
					d.mu.Lock()
					d.blockSZX = tc.szx
					d.mu.Unlock()
					f, sum := writeImage(t, tc.size)
					var last int64 = -1
					if err := s.Push(ctxT(t), "dev1", f, func(sent, total int64) { last = sent }); err != nil {
						t.Fatal(err)
					}
					if got := d.firmware(); sha256.Sum256(got) != sum {
						t.Errorf("device stored %d bytes with another hash", len(got))
					}
					if last != int64(tc.size) {
						t.Errorf("last progress %d, want %d", last, tc.size)
					}
					if n := dialed.Load(); n != want {
						t.Errorf("%d sockets dialed, want %d", n, want)
					}
				})
			}
			t.Run("too-large", func(t *testing.T) {
				s := &Server{}
				pushOver(t, s, lean)
				startServer(t, s)
				d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
				d.mu.Lock()
				d.maxSize = 2048
				d.mu.Unlock()
				f, _ := writeImage(t, 5000)
				err := s.Push(ctxT(t), "dev1", f, nil)
				if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "2048") {
					t.Errorf("push of an oversized package: %v", err)
				}
			})
		})
	}
}

// A push over its own socket survives loss, duplication and reordering
// both ways (RFC 7252 §4.2 retransmission, §4.5 duplicates).
func TestPushLossy(t *testing.T) {
	s := &Server{tx: coaptx.Params{AckTimeout: 40 * time.Millisecond, MaxRetransmit: 10}}
	dialed := pushOver(t, s, true)
	startServer(t, s)
	ua := s.LocalAddr().(*net.UDPAddr)
	p, err := lossy.New(context.Background(), ua, lossy.Config{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	d := newFakeDevice(t, p.Addr().String(), "dev1")
	// Register over a good link; the push meets the bad one.
	if err := p.SetConfig(lossy.Config{Loss: 0.10, Duplicate: 0.05, Reorder: 0.05}); err != nil {
		t.Fatal(err)
	}
	f, sum := writeImage(t, 100_000)
	if err := s.Push(ctxT(t), "dev1", f, nil); err != nil {
		t.Fatal(err)
	}
	if got := d.firmware(); sha256.Sum256(got) != sum {
		t.Errorf("device stored %d bytes with another hash", len(got))
	}
	st := p.Stats()
	t.Logf("proxy: %+v", st)
	if st.Up.Dropped+st.Down.Dropped == 0 || st.Up.Duplicated+st.Down.Duplicated == 0 {
		t.Error("the link lost or duplicated nothing: the test tested nothing")
	}
	if dialed.Load() != 1 {
		t.Errorf("%d sockets dialed, want 1", dialed.Load())
	}
}

// While a push holds the device's datagrams on its own socket, what the
// device sends besides its answers still reaches the server: the device
// answers block 5 only once its registration Update has been answered
// and its notification has arrived.
func TestPushWhileDeviceTalks(t *testing.T) {
	s := &Server{}
	dialed := pushOver(t, s, true)
	startServer(t, s)
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	notes := make(chan string, 16)
	obs, err := s.Observe(ctxT(t), "dev1", mustPath("/3/0/1"), content.TextPlain, func(n Notification) {
		notes <- string(n.Payload)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Cancel(ctxT(t))
	if v := <-notes; v != "Model 1" {
		t.Fatalf("first notification %q", v)
	}
	var hookErr error
	d.mu.Lock()
	loc := d.loc
	d.onBlock = func(cc *udpclient.Conn, num int64) {
		if num != 5 || hookErr != nil {
			return
		}
		hookErr = errors.New("no answer")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cc.Post(ctx, "/"+loc, message.TextPlain, bytes.NewReader(nil),
			message.Option{ID: message.URIQuery, Value: []byte("lt=123")})
		if err != nil {
			hookErr = fmt.Errorf("update: %w", err)
			return
		}
		if resp.Code() != codes.Changed {
			hookErr = fmt.Errorf("update answered %v", resp.Code())
			return
		}
		d.setLocked("/3/0/1", "Model 2")
		select {
		case v := <-notes:
			if v != "Model 2" {
				hookErr = fmt.Errorf("notification %q", v)
				return
			}
		case <-ctx.Done():
			hookErr = errors.New("notification did not arrive")
			return
		}
		hookErr = nil
	}
	d.mu.Unlock()

	f, sum := writeImage(t, 20_000)
	if err := s.Push(ctxT(t), "dev1", f, nil); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	err = hookErr
	d.mu.Unlock()
	if err != nil {
		t.Error(err)
	}
	if reg, _ := s.Registration("dev1"); reg.Lifetime != 123 {
		t.Errorf("lifetime %d after the Update during the push, want 123", reg.Lifetime)
	}
	if got := d.firmware(); sha256.Sum256(got) != sum {
		t.Errorf("device stored %d bytes with another hash", len(got))
	}
	if dialed.Load() != 1 {
		t.Errorf("%d sockets dialed, want 1", dialed.Load())
	}
}

// A device registered over DTLS gets its push through go-coap over its
// session: the DTLS test device answers 4.04 to the PUT, and no socket is
// dialed.
func TestPushDTLSUsesSession(t *testing.T) {
	s := &Server{DTLSAddr: "127.0.0.1:0", PSKs: map[string][]byte{"psk-dev": testPSK}}
	dialed := pushOver(t, s, true)
	startServer(t, s)
	dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	f, _ := writeImage(t, 3000)
	err := s.Push(ctxT(t), "secure1", f, nil)
	if !isCode(err, codes.NotFound) {
		t.Errorf("push to the DTLS device: %v, want its 4.04", err)
	}
	if dialed.Load() != 0 {
		t.Errorf("%d sockets dialed for a DTLS device", dialed.Load())
	}
}

// rawDevice speaks CoAP by hand to answer a push the ways go-coap's
// device never does: separate responses (an empty ACK, then a CON
// response that must be acknowledged, once retransmitted), a duplicated
// piggybacked answer, and a lost request.
type rawDevice struct {
	t    *testing.T
	conn *net.UDPConn
	srv  *net.UDPAddr
	mid  uint16
	loc  string // the registration's Location-Path, rd/ID

	mu      sync.Mutex
	fw      []byte
	sepMIDs map[uint16]bool // separate responses sent -> acknowledged
}

func newRawDevice(t *testing.T, server, ep string) *rawDevice {
	srv, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d := &rawDevice{t: t, conn: conn, srv: srv, mid: 0x4000, sepMIDs: map[uint16]bool{}}
	reg := message.Message{Token: []byte{1, 2}, Code: codes.POST, Type: message.Confirmable, MessageID: int32(d.nextMID()),
		Options: message.Options{
			{ID: message.URIPath, Value: []byte("rd")},
			{ID: message.ContentFormat, Value: []byte{40}},
			{ID: message.URIQuery, Value: []byte("ep=" + ep)},
			{ID: message.URIQuery, Value: []byte("lt=300")},
		},
		Payload: []byte("</5/0>"),
	}
	d.send(reg)
	m, ok := d.read(5 * time.Second)
	if !ok || m.Code != codes.Created {
		t.Fatalf("register: %+v", m)
	}
	d.loc, _ = m.Options.LocationPath()
	return d
}

func (d *rawDevice) nextMID() uint16 { d.mid++; return d.mid }

func (d *rawDevice) send(m message.Message) {
	b := make([]byte, 2048)
	n, err := coder.DefaultCoder.Encode(m, b)
	if err != nil {
		d.t.Errorf("encode: %v", err)
		return
	}
	if _, err := d.conn.WriteToUDP(b[:n], d.srv); err != nil {
		d.t.Errorf("send: %v", err)
	}
}

func (d *rawDevice) read(wait time.Duration) (message.Message, bool) {
	b := make([]byte, 2048)
	d.conn.SetReadDeadline(time.Now().Add(wait))
	n, err := d.conn.Read(b)
	if err != nil {
		return message.Message{}, false
	}
	m := message.Message{Options: make(message.Options, 0, 16)} // Decode fills up to cap
	if _, err := coder.DefaultCoder.Decode(b[:n], &m); err != nil {
		return message.Message{}, false
	}
	return m, true
}

// serve answers the push until the socket closes.
func (d *rawDevice) serve() {
	answered := map[int32]message.Message{} // by request MID, for retransmissions
	lost := false
	for {
		m, ok := d.read(time.Minute)
		if !ok {
			return
		}
		if m.Type == message.Acknowledgement {
			d.mu.Lock()
			if _, sent := d.sepMIDs[uint16(m.MessageID)]; sent {
				d.sepMIDs[uint16(m.MessageID)] = true
			}
			d.mu.Unlock()
			continue
		}
		if m.Type != message.Confirmable || m.Code != codes.PUT {
			continue
		}
		if a, ok := answered[m.MessageID]; ok {
			d.send(a) // a retransmission: the same answer (RFC 7252 §4.5)
			continue
		}
		v, err := m.Options.GetUint32(message.Block1)
		if err != nil {
			d.t.Error("PUT without Block1")
			continue
		}
		szx, num, more, _ := blockwise.DecodeBlockOption(v)
		if num == 1 && !lost {
			lost = true // the network lost it: the server must send it again
			continue
		}
		d.mu.Lock()
		if num*int64(szx.Size()) == int64(len(d.fw)) {
			d.fw = append(d.fw, m.Payload...)
		}
		d.mu.Unlock()
		code := codes.Continue
		if !more {
			code = codes.Changed
		}
		bv, _ := blockwise.EncodeBlockOption(szx, num, more)
		opts := message.Options{{ID: message.Block1, Value: coapopt.PutUint(make([]byte, 4), bv)}}
		if num%2 == 0 {
			a := message.Message{Token: m.Token, Code: code, Type: message.Acknowledgement, MessageID: m.MessageID, Options: opts}
			answered[m.MessageID] = a
			d.send(a)
			if num == 2 {
				d.send(a) // duplicated by the network
			}
			continue
		}
		empty := message.Message{Type: message.Acknowledgement, MessageID: m.MessageID}
		answered[m.MessageID] = empty
		d.send(empty)
		sep := message.Message{Token: m.Token, Code: code, Type: message.Confirmable, MessageID: int32(d.nextMID()), Options: opts}
		d.mu.Lock()
		d.sepMIDs[uint16(sep.MessageID)] = false
		d.mu.Unlock()
		d.send(sep)
		if num == 3 {
			d.send(sep) // a retransmission of the separate response
		}
	}
}

func TestPushSeparateResponses(t *testing.T) {
	s := &Server{tx: coaptx.Params{AckTimeout: 50 * time.Millisecond}}
	dialed := pushOver(t, s, true)
	startServer(t, s)
	d := newRawDevice(t, s.LocalAddr().String(), "raw1")
	go d.serve()
	f, sum := writeImage(t, 7000)
	if err := s.Push(ctxT(t), "raw1", f, nil); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	got := append([]byte(nil), d.fw...)
	d.mu.Unlock()
	if sha256.Sum256(got) != sum {
		t.Errorf("device stored %d bytes with another hash", len(got))
	}
	if dialed.Load() != 1 {
		t.Errorf("%d sockets dialed, want 1", dialed.Load())
	}
	// The last ACK may still be on its way.
	waitfor.Until(t, 10*time.Second, func() error {
		d.mu.Lock()
		var missing []uint16
		for mid, acked := range d.sepMIDs {
			if !acked {
				missing = append(missing, mid)
			}
		}
		n := len(d.sepMIDs)
		d.mu.Unlock()
		if len(missing) != 0 || n != 3 { // blocks 1, 3 and 5 of 0..6
			return fmt.Errorf("separate responses %d, not acknowledged: %v", n, missing)
		}
		return nil
	})
}

// Push ends when its context does, even while it waits for a device that
// never answers.
func TestPushCancel(t *testing.T) {
	s := &Server{}
	dialed := pushOver(t, s, true)
	startServer(t, s)
	d := newRawDevice(t, s.LocalAddr().String(), "mute")
	_ = d // registered, and silent from now on
	f, _ := writeImage(t, 5000)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	err := s.Push(ctx, "mute", f, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("push to a silent device after cancel: %v", err)
	}
	if dialed.Load() != 1 {
		t.Errorf("%d sockets dialed, want 1", dialed.Load())
	}
	_ = os.Remove(f)
}

// The CoAP port is shared with a push's sockets (SO_REUSEPORT), yet a
// second server cannot take it.
func TestListenPortInUse(t *testing.T) {
	s := startServer(t, &Server{})
	s2 := &Server{Addr: s.LocalAddr().String(), Logger: testLogger(t)}
	if err := s2.Listen(); err == nil {
		s2.Close()
		t.Fatalf("a second server listens on %v", s.LocalAddr())
	}
}

// What the device sends right after it answers the last block (the
// notification of State Downloaded, typically) reaches the server. Linux
// gives the device's datagrams to the push's socket while it exists, and
// closing that socket with the datagram unread dropped it: the device
// then waited a retransmission (ACK_TIMEOUT, 2-3 s) for the
// acknowledgement, and its Updating notification and upgrade with it.
func TestPushHandsOnWhatFollowsTheLastAnswer(t *testing.T) {
	s := startServer(t, &Server{})
	d := newRawDevice(t, s.LocalAddr().String(), "after")
	f, _ := writeImage(t, 3000)
	done := make(chan error, 1)
	go func() { done <- s.Push(ctxT(t), "after", f, nil) }()
	var update uint16
	for update == 0 {
		m, ok := d.read(5 * time.Second)
		if !ok {
			t.Fatal("no block from the push")
		}
		if m.Type != message.Confirmable || m.Code != codes.PUT {
			continue
		}
		v, err := m.Options.GetUint32(message.Block1)
		if err != nil {
			t.Fatal("PUT without Block1")
		}
		szx, num, more, _ := blockwise.DecodeBlockOption(v)
		code := codes.Continue
		if !more {
			code = codes.Changed
		}
		bv, _ := blockwise.EncodeBlockOption(szx, num, more)
		d.send(message.Message{Token: m.Token, Code: code, Type: message.Acknowledgement, MessageID: m.MessageID,
			Options: message.Options{{ID: message.Block1, Value: coapopt.PutUint(make([]byte, 4), bv)}}})
		if !more {
			// At once, as a device notifies what the last block did. A
			// registration Update stands in for the notification: any
			// confirmable message must be answered.
			update = d.nextMID()
			d.send(message.Message{Token: []byte{7}, Code: codes.POST, Type: message.Confirmable, MessageID: int32(update),
				Options: message.Options{{ID: message.URIPath, Value: []byte("rd")}, {ID: message.URIPath, Value: []byte(path.Base(d.loc))}}})
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("push: %v", err)
	}
	// Sent once: it is answered without a retransmission, or never.
	for {
		m, ok := d.read(2 * time.Second)
		if !ok {
			t.Fatal("the Update sent right after the last answer was never answered: the push's socket dropped it")
		}
		if uint16(m.MessageID) == update {
			if m.Code != codes.Changed {
				t.Errorf("Update answered %v, want 2.04", m.Code)
			}
			return
		}
	}
}

package server

import (
	"crypto/sha256"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/server/images"
)

// rawPeer sends hand-made CoAP datagrams from laddr.
type rawPeer struct {
	t   *testing.T
	c   *net.UDPConn
	to  *net.UDPAddr
	mid uint16
}

func newRawPeer(t *testing.T, laddr string, to net.Addr) *rawPeer {
	t.Helper()
	la, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		t.Skipf("cannot bind %s: %v", laddr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, c: c, to: to.(*net.UDPAddr), mid: 100}
}

// send encodes m with a new message ID and returns the datagram's size.
func (p *rawPeer) send(m message.Message) int {
	p.t.Helper()
	p.mid++
	m.MessageID = int32(p.mid)
	if m.Token == nil {
		m.Token = []byte{1, 2, 3, 4, 5, 6, 7, 8}
	}
	b, err := coder.DefaultCoder.Encode(m, make([]byte, 2048))
	if err != nil {
		p.t.Fatal(err)
	}
	buf := make([]byte, b)
	coder.DefaultCoder.Encode(m, buf)
	if _, err := p.c.WriteToUDP(buf, p.to); err != nil {
		p.t.Fatal(err)
	}
	return len(buf)
}

// read returns the next datagram and its size; the deadline is a safety net.
func (p *rawPeer) read() (message.Message, int) {
	p.t.Helper()
	buf := make([]byte, 2048)
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := p.c.Read(buf)
	if err != nil {
		p.t.Fatalf("no answer: %v", err)
	}
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
		p.t.Fatalf("answer does not decode: %v", err)
	}
	return m, n
}

func getFW(id string, opts ...message.Option) message.Message {
	o := message.Options{{ID: message.URIPath, Value: []byte("fw")}, {ID: message.URIPath, Value: []byte(id)}}
	o = append(o, opts...)
	return message.Message{Code: codes.GET, Type: message.Confirmable, Options: sortOpts(o)}
}

func sortOpts(o message.Options) message.Options {
	for i := 1; i < len(o); i++ {
		for j := i; j > 0 && o[j].ID < o[j-1].ID; j-- {
			o[j], o[j-1] = o[j-1], o[j]
		}
	}
	return o
}

// The image port answers an unverified address with a 4.01 and an Echo,
// no larger than the request, and sends the block once the Echo comes
// back (RFC 9175 §2.4); a NON GET gets no answer at all (RFC 7252
// §11.3). The registration socket, which serves /fw too, does the same.
func TestImagePortNoAmplification(t *testing.T) {
	s := &Server{}
	s.strictLoopback = true // loopback stands in for remote peers here
	startServer(t, s)
	f, _ := writeImage(t, 5000)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	// Each socket's peers come from their own addresses: a verified
	// address is verified for both.
	for _, c := range []struct {
		name        string
		addr        net.Addr
		peer, other string
	}{
		{"image socket", s.ImageLocalAddr(), "127.0.0.2:0", "127.0.0.3:0"},
		{"registration socket", s.LocalAddr(), "127.0.0.4:0", "127.0.0.5:0"},
	} {
		addr := c.addr
		t.Run(c.name, func(t *testing.T) {
			p := newRawPeer(t, c.peer, addr)
			non := getFW(im.ID)
			non.Type = message.NonConfirmable
			p.send(non)
			// The server reads datagrams in order: the first answer is
			// to the request after the NON.
			n := p.send(getFW(im.ID))
			m, got := p.read()
			if m.Type == message.NonConfirmable || m.MessageID != int32(p.mid) {
				t.Fatalf("answer to a NON GET: %v %v", m.Type, m.Code)
			}
			if m.Code != codes.Unauthorized {
				t.Fatalf("unverified peer: %v, want 4.01", m.Code)
			}
			if got > n {
				t.Errorf("answer of %d bytes to a request of %d from an unverified peer", got, n)
			}
			echo, err := m.Options.GetBytes(images.OptionEcho)
			if err != nil {
				t.Fatal("4.01 without Echo")
			}
			p.send(getFW(im.ID, message.Option{ID: images.OptionEcho, Value: echo}))
			if m, _ := p.read(); m.Code != codes.Content || len(m.Payload) != 1024 {
				t.Fatalf("with the Echo: %v, %d bytes", m.Code, len(m.Payload))
			}
			// The address is verified now: the next block needs no Echo.
			bv, _ := encodeBlock2(6, 1)
			p.send(getFW(im.ID, coapopt.Uint(message.Block2, bv)))
			if m, _ := p.read(); m.Code != codes.Content || len(m.Payload) != 1024 {
				t.Fatalf("next block: %v, %d bytes", m.Code, len(m.Payload))
			}
			// A forged Echo verifies nothing.
			q := newRawPeer(t, c.other, addr)
			bad := append([]byte(nil), echo...)
			bad[len(bad)-1] ^= 1
			q.send(getFW(im.ID, message.Option{ID: images.OptionEcho, Value: bad}))
			if m, _ := q.read(); m.Code != codes.Unauthorized {
				t.Errorf("with a forged Echo: %v, want 4.01", m.Code)
			}
		})
	}
}

// A registered device's address is verified: it pulls without an Echo.
func TestImagePortRegisteredDevice(t *testing.T) {
	s := &Server{}
	s.strictLoopback = true
	startServer(t, s)
	newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 5000)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	p := newRawPeer(t, "127.0.0.1:0", s.ImageLocalAddr())
	p.send(getFW(im.ID))
	if m, _ := p.read(); m.Code != codes.Content {
		t.Errorf("registered device's address: %v, want 2.05", m.Code)
	}
	q := newRawPeer(t, "127.0.0.2:0", s.ImageLocalAddr())
	q.send(getFW(im.ID))
	if m, _ := q.read(); m.Code != codes.Unauthorized {
		t.Errorf("another address: %v, want 4.01", m.Code)
	}
}

// By default a loopback address is verified: its datagrams come from
// this host.
func TestImagePortLoopbackVerified(t *testing.T) {
	s := startServer(t, &Server{})
	f, _ := writeImage(t, 5000)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, la := range []string{"127.0.0.2:0", "[::1]:0"} {
		addr := s.ImageLocalAddr()
		if la == "[::1]:0" {
			w := startServer(t, &Server{Addr: "[::1]:0"})
			if im, err = w.Publish(f); err != nil {
				t.Fatal(err)
			}
			addr = w.ImageLocalAddr()
		}
		p := newRawPeer(t, la, addr)
		p.send(getFW(im.ID))
		if m, _ := p.read(); m.Code != codes.Content {
			t.Errorf("from %s: %v, want 2.05", la, m.Code)
		}
	}
}

// libcoap's client answers the Echo challenge by itself.
func TestImagePortEchoWithLibcoap(t *testing.T) {
	bin, err := exec.LookPath("coap-client-notls")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("coap-client-notls not installed")
		}
		t.Fatal(err)
	}
	s := &Server{}
	s.strictLoopback = true
	startServer(t, s)
	f, sum := writeImage(t, 5000)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.bin")
	cmd := exec.CommandContext(ctxT(t), bin, "-b", "1024", "-o", out, "coap://"+s.ImageLocalAddr().String()+"/fw/"+im.ID)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("coap-client: %v %s", err, b)
	}
	if got, _ := os.ReadFile(out); sha256.Sum256(got) != sum {
		t.Errorf("libcoap fetched %d bytes with another hash", len(got))
	}
}

// Our own downloader, from an address the image port has not verified,
// answers its 4.01 with the Echo and is served (RFC 9175 §2.3), as
// libcoap's client is: stop-and-wait and with a window.
func TestImagePortEchoWithOurDownloader(t *testing.T) {
	f, sum := writeImage(t, 5000)
	for _, window := range []int{1, 4} {
		// A server each: the first download verifies the address.
		s := &Server{}
		s.strictLoopback = true
		startServer(t, s)
		im, err := s.Publish(f)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = download.Get(ctxT(t), download.Request{URI: "coap://" + s.ImageLocalAddr().String() + "/fw/" + im.ID, Window: window}, hashSink{h})
		if err != nil {
			t.Fatalf("window %d: %v", window, err)
		}
		if [32]byte(h.Sum(nil)) != sum {
			t.Errorf("window %d: image fetched with another hash", window)
		}
	}
}

// The image port validates options as the device's handler does.
func TestImagePortOptions(t *testing.T) {
	s := startServer(t, &Server{})
	newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 5000)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	szx7, _ := encodeBlock2(7, 0)
	b0, _ := encodeBlock2(6, 0)
	for _, c := range []struct {
		name string
		opts []message.Option
		want codes.Code
	}{
		{"unknown critical option", []message.Option{{ID: 65001, Value: []byte{1}}}, codes.BadOption},
		{"Proxy-Uri", []message.Option{{ID: message.ProxyURI, Value: []byte("coap://x/")}}, codes.BadOption},
		{"unknown elective option", []message.Option{{ID: 65000, Value: []byte{1}}}, codes.Content},
		{"Block2 SZX 7", []message.Option{coapopt.Uint(message.Block2, szx7)}, codes.BadRequest},
		{"Block2 of 4 bytes", []message.Option{{ID: message.Block2, Value: []byte{0, 0, 0, 6}}}, codes.BadOption},
		{"Block2 twice", []message.Option{coapopt.Uint(message.Block2, b0), coapopt.Uint(message.Block2, b0)}, codes.BadOption},
		{"Accept text", []message.Option{coapopt.Uint(message.Accept, uint32(message.TextPlain))}, codes.NotAcceptable},
		{"Accept octets", []message.Option{coapopt.Uint(message.Accept, uint32(message.AppOctets))}, codes.Content},
	} {
		for name, addr := range map[string]net.Addr{"image": s.ImageLocalAddr(), "registration": s.LocalAddr()} {
			p := newRawPeer(t, "127.0.0.1:0", addr)
			p.send(getFW(im.ID, c.opts...))
			if m, _ := p.read(); m.Code != c.want {
				t.Errorf("%s on the %s socket: %v, want %v", c.name, name, m.Code, c.want)
			}
		}
	}
}

// An unsolicited ACK or RST to the registration port draws nothing, not
// a fresh confirmable 4.02 retransmitted to a claimed address.
func TestRegistrationPortIgnoresStrayACK(t *testing.T) {
	s := startServer(t, &Server{})
	crit := message.Options{{ID: 65001, Value: []byte{1}}}
	for _, m := range []message.Message{
		{Type: message.Acknowledgement, Code: codes.Content, Options: crit},
		{Type: message.Acknowledgement, Code: codes.Content},
		{Type: message.Acknowledgement, Code: codes.GET, Options: message.Options{{ID: message.URIPath, Value: []byte("rd")}}},
		{Type: message.Reset, Code: codes.Content, Options: crit},
		{Type: message.NonConfirmable, Code: codes.Content},
	} {
		p := newRawPeer(t, "127.0.0.1:0", s.LocalAddr())
		p.send(m)
		// Datagrams from one peer are handled in order: the first
		// answer must be the one to this request.
		p.send(message.Message{Type: message.Confirmable, Code: codes.GET, Options: message.Options{{ID: message.URIPath, Value: []byte("nothing")}}})
		got, _ := p.read()
		if got.MessageID != int32(p.mid) || got.Type != message.Acknowledgement || got.Code != codes.NotFound {
			t.Errorf("after a stray %v %v: %v %v mid %d, want the ACK 4.04 to mid %d", m.Type, m.Code, got.Type, got.Code, got.MessageID, p.mid)
		}
	}
}

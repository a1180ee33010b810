package download

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
	"github.com/lwm2m-fota/lwm2m/internal/lossy"
	piondtls "github.com/pion/dtls/v3"
)

// coapsServer serves a coapServer's resource over DTLS with a PSK, and
// accepts one handshake only: a client that tears its session down and
// dials again is refused, as Anjay's test server does.
type coapsServer struct {
	*coapServer
	ln net.Listener

	mu         sync.Mutex
	handshakes int
	conns      []net.Conn
	closed     bool
}

var testPSK = &Security{PSKIdentity: "dev", PSK: []byte("download-secret")}

func newCoAPSServer(t testing.TB, data []byte, etag string) *coapsServer {
	t.Helper()
	ln, err := piondtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		piondtls.WithPSK(func([]byte) ([]byte, error) { return testPSK.PSK, nil }),
		piondtls.WithCipherSuites(dtlsconf.PSKSuites...),
		piondtls.WithExtendedMasterSecret(piondtls.RequireExtendedMasterSecret),
		piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(8)),
	)
	if err != nil {
		t.Fatal(err)
	}
	s := &coapsServer{coapServer: &coapServer{data: data, etag: []byte(etag), maxSZX: 6, mid: 1000}, ln: ln}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			if s.closed {
				c.Close()
			}
			s.mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); s.serveConn(c.(*piondtls.Conn)) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		// A session whose close_notify was lost would read for ever.
		s.mu.Lock()
		s.closed = true
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *coapsServer) serveConn(c *piondtls.Conn) {
	defer c.Close()
	s.mu.Lock()
	s.handshakes++
	refuse := s.handshakes > 1
	s.mu.Unlock()
	if refuse {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := c.HandshakeContext(ctx)
	cancel()
	if err != nil {
		return
	}
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		for _, out := range s.answer(buf[:n]) {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

func (s *coapsServer) handshakeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handshakes
}

// uriVia is the coaps URI of the resource at addr (the server or a proxy).
func (s *coapsServer) uriVia(addr string) string { return "coaps://" + addr + "/fw" }

// A block's GET or its answer lost over DTLS costs a retransmission on the
// same session (RFC 7252 §4.2), never a new handshake.
func TestCoAPSLossRetransmitsOnSameSession(t *testing.T) {
	data := randomBytes(t, 12*1024+77)
	s := newCoAPSServer(t, data, "e")
	lostGET, lostAnswer := false, false
	s.configure(func(s *coapServer) {
		s.drop = func(num uint32) bool {
			if num == 3 && !lostGET {
				lostGET = true
				return true
			}
			return false
		}
		s.dropAnswer = func(num uint32) bool {
			if num == 7 && !lostAnswer {
				lostAnswer = true
				return true
			}
			return false
		}
	})
	var sink memSink
	_, err := Get(getCtx(t), Request{URI: s.uriVia(s.ln.Addr().String()), Security: testPSK, Tx: fastTx()}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(sink.bytes()) != sha256.Sum256(data) {
		t.Fatal("image differs")
	}
	s.configure(func(*coapServer) {
		if !lostGET || !lostAnswer {
			t.Errorf("lost GET %v, lost answer %v: the test lost nothing", lostGET, lostAnswer)
		}
	})
	if n := s.handshakeCount(); n != 1 {
		t.Errorf("%d handshakes, want 1", n)
	}
}

// The same through a lossy network: loss starts once the session is up.
func TestCoAPSLossyProxy(t *testing.T) {
	data := randomBytes(t, 40*1024+5)
	s := newCoAPSServer(t, data, "e")
	p, err := lossy.New(getCtx(t), s.ln.Addr().(*net.UDPAddr), lossy.Config{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s.configure(func(s *coapServer) {
		s.onBlock = func(_ *coapServer, num uint32) {
			if num == 0 {
				p.SetConfig(lossy.Config{Loss: 0.1})
			}
		}
	})
	tx := TxParams{AckTimeout: 20 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 6}
	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: s.uriVia(p.Addr().String()), Security: testPSK, Tx: tx}, &sink); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(sink.bytes()) != sha256.Sum256(data) {
		t.Fatal("image differs")
	}
	st := p.Stats()
	if st.Up.Dropped+st.Down.Dropped == 0 {
		t.Error("the proxy lost nothing")
	}
	if n := s.handshakeCount(); n != 1 {
		t.Errorf("%d handshakes, want 1", n)
	}
}

// A server silent for longer than one ACK_TIMEOUT, but back within the
// retransmission budget, is still served on the same session.
func TestCoAPSSilentServerSameSession(t *testing.T) {
	data := randomBytes(t, 6*1024)
	s := newCoAPSServer(t, data, "e")
	var silentUntil time.Time
	s.configure(func(s *coapServer) {
		s.drop = func(num uint32) bool {
			if num == 2 && silentUntil.IsZero() {
				silentUntil = time.Now().Add(150 * time.Millisecond)
			}
			return time.Now().Before(silentUntil)
		}
	})
	// ACK_TIMEOUT 20-30 ms, four retransmissions: 300 ms at least.
	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: s.uriVia(s.ln.Addr().String()), Security: testPSK, Tx: fastTx()}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	s.configure(func(s *coapServer) {
		if s.requests < 8 {
			t.Errorf("%d requests for 6 blocks: the silence cost no retransmission", s.requests)
		}
	})
	if n := s.handshakeCount(); n != 1 {
		t.Errorf("%d handshakes, want 1", n)
	}
}

package server

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/server/coaps"
)

// Errors of the DTLS transport.
var (
	// ErrPSKFile reports a malformed PSK credentials file.
	ErrPSKFile = errors.New("server: bad PSK file")
	// ErrNoSession: the device registered over DTLS and its session is
	// gone (the server restarted, or the session was closed). A DTLS
	// server cannot start a handshake towards a client; the device must
	// reconnect, which it does at its next Update at the latest.
	ErrNoSession = errors.New("server: no DTLS session with the device")
)

// DefaultDTLSAddr is the IANA port for coaps (LwM2M 1.1 Transport, 5.1).
const DefaultDTLSAddr = ":5684"

// ParsePSKs reads PSK credentials, one "identity:hexkey" per line. Blank
// lines and lines starting with '#' are skipped; the identity is taken
// verbatim up to the last ':' (so it may itself hold ':'), the key is hex.
func ParsePSKs(r io.Reader) (map[string][]byte, error) {
	out := map[string][]byte{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ':')
		if i <= 0 {
			return nil, fmt.Errorf("%w: line %d: want identity:hexkey", ErrPSKFile, n)
		}
		id, hk := line[:i], strings.TrimSpace(line[i+1:])
		key, err := hex.DecodeString(hk)
		if err != nil || len(key) == 0 {
			return nil, fmt.Errorf("%w: line %d: key of %q is not hex", ErrPSKFile, n, id)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("%w: line %d: identity %q given twice", ErrPSKFile, n, id)
		}
		out[id] = key
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPSKFile, err)
	}
	return out, nil
}

// LoadPSKFile reads a credentials file in the ParsePSKs format.
func LoadPSKFile(name string) (map[string][]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	defer f.Close()
	m, err := ParsePSKs(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

// listenDTLS opens the coaps listener. Called by Listen with s.mu held.
func (s *Server) listenDTLS() error {
	if len(s.PSKs) == 0 {
		return fmt.Errorf("server: DTLSAddr %s without PSKs", s.DTLSAddr)
	}
	keys := make(map[string][]byte, len(s.PSKs))
	for id, k := range s.PSKs {
		keys[id] = bytes.Clone(k)
	}
	log := s.logger()
	lookup := func(identity []byte) ([]byte, error) {
		if k, ok := keys[string(identity)]; ok {
			return k, nil
		}
		log.Warn("unknown PSK identity", "identity", string(identity))
		return nil, fmt.Errorf("unknown PSK identity %q", identity)
	}
	// Room for every registration's session, and handshakes besides.
	a, err := coaps.Listen(s.DTLSAddr, lookup, log, s.maxRegistrations()+coaps.AcceptBacklog)
	if err != nil {
		return err
	}
	s.dtlsLis = a
	s.sessions = make(map[string]*udpclient.Conn)
	opts := []dtlsserver.Option{}
	if s.handshakeTimeout > 0 {
		opts = append(opts, options.WithDTLSHandshakeTimeout(s.handshakeTimeout))
	}
	s.dtls = coapdtls.NewServer(append(opts,
		options.WithHandlerFunc(s.handle),
		options.WithBlockwise(false, blockwise.SZX1024, time.Minute),
		options.WithInactivityMonitor(2*time.Hour, func(cc *udpclient.Conn) { _ = cc.Close() }),
		options.WithOnNewConn(s.addSession),
		// Failed handshakes come here too, with the reason.
		options.WithErrors(func(err error) { log.Debug("coaps", "err", err) }),
	)...)
	return nil
}

// addSession records a completed DTLS session, so that requests to the
// device it registers go over it.
func (s *Server) addSession(cc *udpclient.Conn) {
	addr := cc.RemoteAddr().String()
	s.mu.Lock()
	if s.sessions != nil {
		s.sessions[addr] = cc
	}
	s.mu.Unlock()
	s.logger().Debug("dtls session", "addr", addr, "identity", coaps.PSKIdentity(cc))
	cc.AddOnClose(func() {
		s.mu.Lock()
		if s.sessions[addr] == cc {
			delete(s.sessions, addr)
		}
		s.mu.Unlock()
	})
}

// session returns the DTLS session with the peer at addr.
func (s *Server) session(addr string) (*udpclient.Conn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cc, ok := s.sessions[addr]
	return cc, ok
}

// isSecure reports whether cc is a DTLS session.
func isSecure(cc *udpclient.Conn) bool {
	_, ok := cc.NetConn().(*dtls.Conn)
	return ok
}

// DTLSLocalAddr returns the bound coaps address, or nil when none.
func (s *Server) DTLSLocalAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dtlsLis == nil {
		return nil
	}
	return s.dtlsLis.Addr()
}

// Package dtlsconf builds and dials the DTLS 1.2 client connections of the
// library (the LwM2M server connection and coaps downloads), so that both
// offer the same cipher suites, verify servers the same way and report
// handshake failures with the same errors.
package dtlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	"github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	"github.com/pion/dtls/v3/pkg/protocol/alert"
)

// Sentinel errors of a failed handshake.
var (
	// ErrNoCredentials: neither a PSK nor certificates nor a trust anchor.
	ErrNoCredentials = errors.New("dtls: no PSK or certificates configured")
	// ErrPSKRejected: in PSK mode the server answered the handshake with
	// a fatal alert, which means an unknown identity or a wrong key.
	ErrPSKRejected = errors.New("dtls: PSK rejected by server")
	// ErrCertificate: the server's certificate failed verification
	// against the pinned certificate or the trust store.
	ErrCertificate = errors.New("dtls: server certificate rejected")
	// ErrRejected: the server ended the handshake with a fatal alert
	// (for example it does not accept the client certificate).
	ErrRejected = errors.New("dtls: handshake rejected by server")
	// ErrStalled: in PSK mode the server answered the hello but not the
	// client's Finished; passed to Config.Stalled.
	ErrStalled = errors.New("dtls: handshake stalled after the key exchange")
	// ErrTimeout: the server did not complete the handshake in time. In
	// PSK mode a wrong key often looks like this, because a server
	// silently drops records it cannot decrypt (RFC 6347 §4.1.2.7).
	ErrTimeout = errors.New("dtls: handshake timed out")
)

// PSKSuites are offered in PSK mode, the one LwM2M mandates
// (LwM2M 1.1 Transport §5.2.8.1) first, then the others pion implements.
var PSKSuites = []dtls.CipherSuiteID{
	dtls.TLS_PSK_WITH_AES_128_CCM_8,
	dtls.TLS_PSK_WITH_AES_128_CCM,
	dtls.TLS_PSK_WITH_AES_256_CCM_8,
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
}

// CertSuites are offered in certificate mode, the one LwM2M mandates
// (LwM2M 1.1 Transport §5.2.8.3) first. RSA is kept for trust-store
// servers such as general-purpose coaps download hosts.
var CertSuites = []dtls.CipherSuiteID{
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// Config describes one DTLS client. Set PSK for PSK mode; otherwise
// certificate mode, where the server is checked against ServerCert if set
// and against RootCAs (nil: the system roots) if not.
type Config struct {
	PSKIdentity []byte
	PSK         []byte

	// Certificates are presented when the server asks for one.
	Certificates []tls.Certificate
	// ServerCert pins the server: the DER of its certificate, or of its
	// SubjectPublicKeyInfo. The match is exact and no chain is built,
	// as LwM2M's default Certificate Usage 3 (domain-issued certificate)
	// asks (LwM2M 1.1 Core, /0/x/15).
	ServerCert []byte
	// RootCAs verifies the server's chain when ServerCert is empty.
	RootCAs *x509.CertPool
	// ServerName is checked in the server certificate's names with
	// RootCAs. Empty: the host dialled.
	ServerName string

	// ConnectionID offers RFC 9146 Connection IDs: the client asks the
	// server for one and sends it, so that the server recognises the
	// client after a NAT rebinding. The client needs none itself: its
	// socket is connected to the server.
	ConnectionID bool
	// FlightInterval is the first retransmission timeout of a handshake
	// flight; it doubles up to 60 s (RFC 6347 §4.2.4.1). Default 1 s.
	FlightInterval time.Duration

	// Stalled, if set, is called once when a PSK handshake has had no
	// answer to the client's Finished for StallAfter: the server answered
	// the hello, so it is there, and a server silently drops the records
	// it cannot decrypt (RFC 6347 §4.1.2.7), so a wrong key looks exactly
	// like this. The handshake goes on until its context ends; Stalled
	// only lets the application say so long before that.
	Stalled func(err error)
	// StallAfter defaults to three flight intervals (two retransmissions).
	StallAfter time.Duration

	// BlockingReads reads the socket with blocking system calls outside
	// Go's netpoller (package udpsock), for a short transfer that waits on
	// one datagram at a time: a firmware download. The reading thread is
	// then busy for the life of the connection, which suits a download and
	// not an idle client. Ignored where udpsock is not supported.
	BlockingReads bool
	// Resolver looks up the server's name; nil means net.DefaultResolver.
	Resolver *net.Resolver
}

// PSKMode reports whether c selects PSK mode.
func (c *Config) PSKMode() bool { return len(c.PSK) > 0 }

// Options returns the pion client options for c, the server being host
// (a host name or address, without port).
func (c *Config) Options(host string) ([]dtls.ClientOption, error) {
	if !c.PSKMode() && len(c.Certificates) == 0 && c.RootCAs == nil && len(c.ServerCert) == 0 {
		return nil, ErrNoCredentials
	}
	opts := []dtls.ClientOption{
		// RFC 7627: binds the master secret to the whole handshake.
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	}
	if c.FlightInterval > 0 {
		opts = append(opts, dtls.WithFlightInterval(c.FlightInterval))
	}
	if c.ConnectionID {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	if c.PSKMode() {
		psk := bytes.Clone(c.PSK)
		return append(opts,
			dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
			// A pion client sends this as its PSK identity.
			dtls.WithPSKIdentityHint(bytes.Clone(c.PSKIdentity)),
			dtls.WithCipherSuites(PSKSuites...),
		), nil
	}
	opts = append(opts, dtls.WithCipherSuites(CertSuites...))
	if len(c.Certificates) > 0 {
		// pion refuses an empty list; a client without a certificate
		// just verifies the server (a download from a public server).
		opts = append(opts, dtls.WithCertificates(c.Certificates...))
	}
	if len(c.ServerCert) > 0 {
		pin := bytes.Clone(c.ServerCert)
		// The pin replaces chain building: a self-signed LwM2M server
		// certificate has no chain to build.
		return append(opts,
			dtls.WithInsecureSkipVerify(true),
			dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
				return VerifyPin(pin, raw)
			}),
		), nil
	}
	name := c.ServerName
	if name == "" {
		name = host
	}
	return append(opts, dtls.WithRootCAs(c.RootCAs), dtls.WithServerName(name)), nil
}

// errPinMismatch is wrapped in ErrCertificate.
var errPinMismatch = errors.New("does not match the pinned server certificate")

// VerifyPin checks a peer's certificate chain raw against a pinned
// certificate or SubjectPublicKeyInfo (LwM2M Certificate Usage 3): the
// leaf must be the pinned certificate or carry the pinned key. TLS over
// TCP uses it too.
func VerifyPin(pin []byte, raw [][]byte) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: server sent no certificate", ErrCertificate)
	}
	if bytes.Equal(raw[0], pin) {
		return nil
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	if bytes.Equal(leaf.RawSubjectPublicKeyInfo, pin) {
		return nil
	}
	if pc, err := x509.ParseCertificate(pin); err == nil && bytes.Equal(pc.RawSubjectPublicKeyInfo, leaf.RawSubjectPublicKeyInfo) {
		// The same key re-certified (for example renewed) still matches.
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrCertificate, leaf.Subject, errPinMismatch)
}

// Dial resolves addr ("host:port"), connects a UDP socket to it and
// completes a DTLS handshake before ctx ends. The socket is connected, so
// the kernel drops datagrams from any other address or port: they can
// neither reach the DTLS layer nor tear the session down. The returned
// error wraps one of the package's sentinels when the handshake failed.
func Dial(ctx context.Context, addr string, c *Config) (*dtls.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	opts, err := c.Options(host)
	if err != nil {
		return nil, err
	}
	pc, raddr, err := dialUDP(ctx, addr, c.BlockingReads, c.Resolver)
	if err != nil {
		return nil, err
	}
	var done atomic.Bool
	if c.PSKMode() && c.Stalled != nil {
		opts = append(opts, c.watchPSK(addr, &done))
	}
	conn, err := dtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		pc.Close()
		return nil, err
	}
	err = conn.HandshakeContext(ctx)
	done.Store(true)
	if err != nil {
		conn.Close()
		return nil, classify(ctx, c, addr, err)
	}
	return conn, nil
}

// watchPSK returns a PSK option that also times the rest of the
// handshake: pion asks for the key when the server's hello flight has
// come, just before the client sends its Finished.
func (c *Config) watchPSK(addr string, done *atomic.Bool) dtls.ClientOption {
	psk := bytes.Clone(c.PSK)
	after := c.StallAfter
	if after <= 0 {
		fi := c.FlightInterval
		if fi <= 0 {
			fi = time.Second
		}
		after = 3 * fi
	}
	var once sync.Once
	return dtls.WithPSK(func([]byte) ([]byte, error) {
		once.Do(func() {
			time.AfterFunc(after, func() {
				if !done.Load() {
					c.Stalled(fmt.Errorf("%w: %s answered the hello but not the Finished for %v: the PSK key is probably wrong (servers drop what they cannot decrypt)", ErrStalled, addr, after))
				}
			})
		})
		return psk, nil
	})
}

// dialUDP connects a UDP socket to addr, for pion to read.
func dialUDP(ctx context.Context, addr string, blocking bool, r *net.Resolver) (net.PacketConn, net.Addr, error) {
	d := net.Dialer{Resolver: r}
	uc, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, nil, err
	}
	if !blocking {
		return dtlsnet.PacketConnFromConn(uc), uc.RemoteAddr(), nil
	}
	sc, err := udpsock.Replace(uc.(*net.UDPConn), 10*time.Millisecond)
	if err != nil {
		return dtlsnet.PacketConnFromConn(uc), uc.RemoteAddr(), nil
	}
	pc := udpsock.NewPacketConn(sc)
	return pc, pc.RemoteAddr(), nil
}

// remoteAlert is satisfied by pion's (unexported) error for an alert
// received from the peer; its promoted Marshal gives level and description.
type remoteAlert interface {
	error
	IsFatalOrCloseNotify() bool
	Marshal() ([]byte, error)
}

// classify wraps a handshake error in the sentinel that says what to fix.
func classify(ctx context.Context, c *Config, addr string, err error) error {
	if errors.Is(err, ErrCertificate) {
		return err
	}
	var ra remoteAlert
	if errors.As(err, &ra) {
		desc := ra.Error()
		if b, merr := ra.Marshal(); merr == nil && len(b) == 2 {
			desc = alert.Description(b[1]).String()
		}
		if c.PSKMode() {
			return fmt.Errorf("%w %s (alert %s): check the PSK identity and key", ErrPSKRejected, addr, desc)
		}
		return fmt.Errorf("%w %s (alert %s)", ErrRejected, addr, desc)
	}
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &hostname) {
		return fmt.Errorf("%w: %s: %w", ErrCertificate, addr, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
			return cerr // the caller gave up
		}
		hint := ""
		if c.PSKMode() {
			hint = " (a wrong PSK identity or key looks like this too)"
		}
		return fmt.Errorf("%w: no answer from %s%s: %w", ErrTimeout, addr, hint, err)
	}
	var te *dtls.TimeoutError
	if errors.As(err, &te) {
		return fmt.Errorf("%w: no answer from %s: %w", ErrTimeout, addr, err)
	}
	return fmt.Errorf("dtls: handshake with %s: %w", addr, err)
}

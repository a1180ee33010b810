// Package coaps is the secure transport of the LwM2M server connection:
// CoAP over DTLS 1.2 (pion/dtls) with a pre-shared key or certificates,
// as LwM2M 1.1 Transport §5.2 describes. Plug it into the client core
// with Configure:
//
//	cfg := lwm2m.Config{Endpoint: ep, Server: "coaps://host"}
//	err := coaps.Configure(&cfg, coaps.Config{PSKIdentity: id, PSK: key})
//	client, err := lwm2m.New(cfg)
//
// Raw Public Key mode (Security Mode 1, RFC 7250) is not supported: pion
// does not implement it.
package coaps

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/pion/dtls/v3"
)

// Sentinel errors. A failed dial wraps one of the handshake errors, so
// that an application can tell a configuration problem from a network one.
var (
	// ErrConfig reports an unusable Config.
	ErrConfig = errors.New("coaps: invalid configuration")
	// ErrRPK: Security Mode 1 (Raw Public Key) is not implemented by pion.
	ErrRPK = errors.New("coaps: raw public key mode is not supported")
	// ErrNoSec: Security Mode 3 (NoSec) needs no secure transport.
	ErrNoSec = errors.New("coaps: security mode is NoSec")

	// ErrPSKRejected: the server answered the handshake with a fatal
	// alert in PSK mode (unknown identity or wrong key).
	ErrPSKRejected = dtlsconf.ErrPSKRejected
	// ErrCertificate: the server's certificate did not match the pinned
	// one, or did not verify against the trust store.
	ErrCertificate = dtlsconf.ErrCertificate
	// ErrRejected: the server ended a certificate-mode handshake with a
	// fatal alert (for example it does not know the client certificate).
	ErrRejected = dtlsconf.ErrRejected
	// ErrTimeout: no complete handshake within Config.HandshakeTimeout.
	// Servers drop records they cannot decrypt (RFC 6347 §4.1.2.7), so a
	// wrong PSK usually ends here rather than in ErrPSKRejected.
	ErrTimeout = dtlsconf.ErrTimeout
)

// Config is the secure transport of one LwM2M server account. Set PSK for
// PSK mode (Security Mode 0), Certificate for certificate mode (2).
type Config struct {
	// Server is the LwM2M server URI, "coaps://host[:port]" (port 5684 by
	// default); Configure takes lwm2m.Config.Server.
	Server string

	// PSKIdentity and PSK select PSK mode (/0/x/3 and /0/x/5).
	PSKIdentity []byte
	PSK         []byte

	// Certificate is the client's certificate and private key (/0/x/3
	// and /0/x/5), presented when the server asks for one.
	Certificate *tls.Certificate
	// ServerCertificate pins the server (/0/x/4): the DER of its X.509
	// certificate or of its SubjectPublicKeyInfo. The server's leaf must
	// match; no chain is built (LwM2M Certificate Usage 3, the default).
	ServerCertificate []byte
	// RootCAs verifies the server's chain when ServerCertificate is
	// empty; nil means the system roots.
	RootCAs *x509.CertPool
	// ServerName overrides the name checked against RootCAs; default the
	// URI's host.
	ServerName string

	// DisableConnectionID stops the client from offering RFC 9146
	// Connection IDs. With them (the default, when the server agrees) the
	// server keeps the session when a NAT rebinds the client's address.
	DisableConnectionID bool
	// HandshakeTimeout bounds one handshake; default 60 s, room for five
	// retransmissions of a flight (RFC 6347 §4.2.4.1: 1 s, doubling).
	HandshakeTimeout time.Duration
	// FlightInterval is the first handshake retransmission timeout;
	// default 1 s (RFC 6347 §4.2.4.1). It doubles on each retransmission.
	FlightInterval time.Duration
	// Logger receives handshake outcomes; default slog.Default().
	Logger *slog.Logger
}

// Configure makes lc reach its coaps:// server with the credentials of
// sec, in one call: it sets lc.Transport and lc.Credentials (what the
// Security object reports). sec.Server and sec.Logger default to lc's.
func Configure(lc *lwm2m.Config, sec Config) error {
	switch {
	case sec.Server == "":
		sec.Server = lc.Server
	case sec.Server != lc.Server:
		return fmt.Errorf("%w: server %q differs from the client's %q", ErrConfig, sec.Server, lc.Server)
	}
	if sec.Logger == nil {
		sec.Logger = lc.Logger
	}
	t, err := NewTransport(sec)
	if err != nil {
		return err
	}
	cr, err := Credentials(sec)
	if err != nil {
		return err
	}
	lc.Transport, lc.Credentials = t, &cr
	return nil
}

// Transport is the DTLS transport of one server account; it implements
// lwm2m.Transport.
type Transport struct {
	addr    string
	dc      *dtlsconf.Config
	timeout time.Duration
	log     *slog.Logger
}

// NewTransport checks cfg and returns the transport to put in
// lwm2m.Config.Transport; Configure does both.
func NewTransport(cfg Config) (*Transport, error) {
	addr, err := serverAddr(cfg.Server)
	if err != nil {
		return nil, err
	}
	dc := &dtlsconf.Config{
		PSKIdentity:    cfg.PSKIdentity,
		PSK:            cfg.PSK,
		ServerCert:     cfg.ServerCertificate,
		RootCAs:        cfg.RootCAs,
		ServerName:     cfg.ServerName,
		ConnectionID:   !cfg.DisableConnectionID,
		FlightInterval: cfg.FlightInterval,
	}
	if cfg.Certificate != nil {
		dc.Certificates = []tls.Certificate{*cfg.Certificate}
	}
	switch {
	case len(cfg.PSK) > 0 && cfg.Certificate != nil:
		return nil, fmt.Errorf("%w: both a PSK and a certificate", ErrConfig)
	case len(cfg.PSK) > 0 && len(cfg.PSKIdentity) == 0:
		return nil, fmt.Errorf("%w: a PSK needs an identity", ErrConfig)
	case len(cfg.PSK) == 0 && cfg.Certificate == nil && len(cfg.ServerCertificate) == 0 && cfg.RootCAs == nil:
		return nil, fmt.Errorf("%w: neither a PSK nor a certificate", ErrConfig)
	}
	host, _, _ := net.SplitHostPort(addr)
	if _, err := dc.Options(host); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	timeout := cfg.HandshakeTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mode := "certificate"
	if dc.PSKMode() {
		mode = "psk"
	}
	log = log.With("server", addr, "mode", mode)
	// Say at once what a silent server after the key exchange means,
	// rather than after the handshake timeout.
	dc.Stalled = func(err error) { log.Error(err.Error(), "gives_up_after", timeout) }
	return &Transport{addr: addr, dc: dc, timeout: timeout, log: log}, nil
}

// Dial completes a fresh DTLS handshake with the server and returns the
// session. Datagrams from any other address or port never reach it: the
// socket is connected to the server.
func (t *Transport) Dial(ctx context.Context) (net.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	conn, err := dtlsconf.Dial(hctx, t.addr, t.dc)
	if err != nil {
		switch {
		case errors.Is(err, ErrPSKRejected), errors.Is(err, ErrCertificate), errors.Is(err, ErrRejected):
			// Retrying cannot fix this; the core backs off between attempts.
			t.log.Error(err.Error(), "err", err)
		default:
			t.log.Warn("handshake failed", "err", err)
		}
		return nil, err
	}
	if st, ok := conn.ConnectionState(); ok {
		t.log.Info("DTLS session established",
			"suite", dtls.CipherSuiteName(st.CipherSuiteID))
	}
	return conn, nil
}

// serverAddr turns a coaps URI into "host:port".
func serverAddr(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("%w: server URI: %w", ErrConfig, err)
	}
	if u.Scheme != "coaps" || u.Hostname() == "" {
		return "", fmt.Errorf("%w: server URI %q is not coaps://host[:port]", ErrConfig, uri)
	}
	return coapuri.HostPort(u), nil
}

// TransportFor returns a function for lwm2m.Config.TransportFor that
// builds each coaps server account's transport from its URI and the
// credentials of its Security instance (FromCredentials), as a
// provisioning or a bootstrap left them: the way to reach several coaps
// servers. Handshake outcomes go to log (nil: slog.Default()).
func TransportFor(log *slog.Logger) func(serverURI string, cr lwm2m.Credentials) (lwm2m.Transport, error) {
	return func(serverURI string, cr lwm2m.Credentials) (lwm2m.Transport, error) {
		cfg, err := FromCredentials(serverURI, cr)
		if err != nil {
			return nil, err
		}
		cfg.Logger = log
		return NewTransport(cfg)
	}
}

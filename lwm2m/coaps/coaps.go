// Package coaps is the secure transport of the LwM2M server connection:
// CoAP over DTLS 1.2 (pion/dtls) with a pre-shared key or certificates,
// as LwM2M 1.1 Transport §5.2 describes. Plug it into the client core
// with lwm2m.Config.Dial:
//
//	dial, err := coaps.Dialer(coaps.Config{Server: uri, PSKIdentity: id, PSK: key})
//	client, err := lwm2m.New(lwm2m.Config{Endpoint: ep, Server: uri, Dial: dial})
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
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
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
	// default), the same as lwm2m.Config.Server.
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
	// Tx are the CoAP transmission parameters over the session; zero
	// fields take the RFC 7252 defaults. Use the client core's values.
	Tx lwm2m.TxParams
	// Logger receives handshake outcomes; default slog.Default().
	Logger *slog.Logger
}

// DialFunc is the type of lwm2m.Config.Dial.
type DialFunc = func(ctx context.Context, handler udpclient.HandlerFunc) (*udpclient.Conn, error)

// Dialer checks cfg and returns the function to put in lwm2m.Config.Dial.
// Each call completes a fresh DTLS handshake with the server and returns a
// CoAP connection over it that serves handler and closes when ctx ends.
// Datagrams from any other address or port never reach it: the socket is
// connected to the server.
func Dialer(cfg Config) (DialFunc, error) {
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
	tx := txOption(cfg.Tx)
	// Say at once what a silent server after the key exchange means,
	// rather than after the handshake timeout.
	dc.Stalled = func(err error) { log.Error("coaps: "+err.Error(), "gives_up_after", timeout) }

	return func(ctx context.Context, handler udpclient.HandlerFunc) (*udpclient.Conn, error) {
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := dtlsconf.Dial(hctx, addr, dc)
		if err != nil {
			switch {
			case errors.Is(err, ErrPSKRejected), errors.Is(err, ErrCertificate), errors.Is(err, ErrRejected):
				// Retrying cannot fix this; the core backs off between attempts.
				log.Error("coaps: "+err.Error(), "err", err)
			default:
				log.Warn("coaps: handshake failed", "err", err)
			}
			return nil, err
		}
		if st, ok := conn.ConnectionState(); ok {
			log.Info("coaps: DTLS session established",
				"suite", dtls.CipherSuiteName(st.CipherSuiteID))
		}
		cc := coapdtls.Client(conn,
			options.WithContext(ctx),
			options.WithHandlerFunc(handler),
			// Block-wise is the core's: go-coap's would assemble firmware in memory.
			options.WithBlockwise(false, 0, 0),
			options.WithErrors(func(err error) { log.Debug("coaps", "err", err) }),
			options.WithCloseSocket(),
			// go-coap reads each record into a buffer of one MTU, and pion
			// refuses a larger record with an error that ends the session:
			// read any record pion can deliver, so that a large request is
			// answered.
			options.WithMTU(maxRecordRead),
			tx,
		)
		stop := context.AfterFunc(ctx, func() { _ = cc.Close() })
		go func() {
			<-cc.Done()
			stop()
		}()
		return cc, nil
	}, nil
}

// maxRecordRead is the largest record pion/dtls delivers: it reads each
// datagram into 8 KiB (its inboundBufferSize). A request in a larger
// datagram is dropped by pion before the client sees it.
const maxRecordRead = 8192

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

// txOption applies the RFC 7252 §4.8 defaults to the zero fields of t.
func txOption(t lwm2m.TxParams) options.TransmissionOpt {
	t = t.Defaults()
	return options.WithTransmission(1, t.AckTimeout, uint32(t.MaxRetransmit), t.AckRandomFactor)
}

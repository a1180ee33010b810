package download

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
)

// dialDTLS opens a DTLS 1.2 client connection for coaps, with the suites
// and server checks the LwM2M server connection uses (internal/dtlsconf).
func dialDTLS(ctx context.Context, u *url.URL, req *Request) (net.Conn, error) {
	sec := req.Security
	if sec == nil {
		return nil, fmt.Errorf("%w: coaps needs a PSK or certificates", ErrConnection)
	}
	cfg := &dtlsconf.Config{
		PSKIdentity:   []byte(sec.PSKIdentity),
		PSK:           sec.PSK,
		Certificates:  sec.Certificates,
		ServerCert:    sec.ServerCertificate,
		RootCAs:       sec.RootCAs,
		ServerName:    sec.ServerName,
		ConnectionID:  true,
		BlockingReads: true,
		Resolver:      req.Resolver,
	}
	hctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	conn, err := dtlsconf.Dial(hctx, coapuri.HostPort(u), cfg)
	switch {
	case err == nil:
		return conn, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, dtlsconf.ErrNoCredentials):
		return nil, fmt.Errorf("%w: coaps needs a PSK or certificates", ErrConnection)
	case errors.Is(err, dtlsconf.ErrTimeout):
		return nil, transient(fmt.Errorf("download: %w", err))
	case errors.As(err, new(*net.DNSError)) || errors.As(err, new(*net.OpError)):
		// Resolution and socket errors may pass.
		return nil, transient(fmt.Errorf("download: %w", err))
	default:
		// A bad key or certificate will not get better by retrying.
		return nil, fmt.Errorf("%w: %w", ErrConnection, err)
	}
}

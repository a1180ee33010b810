package download

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/pion/dtls/v3"
)

// dialDTLS opens a DTLS 1.2 client connection for coaps. PSK and
// certificate suites are those LwM2M mandates (CCM_8) plus CCM and GCM.
func dialDTLS(ctx context.Context, u *url.URL, req *Request) (net.Conn, error) {
	sec := req.Security
	if sec == nil || (len(sec.PSK) == 0 && len(sec.Certificates) == 0 && sec.RootCAs == nil) {
		return nil, fmt.Errorf("%w: coaps needs a PSK or certificates", ErrConnection)
	}
	raddr, err := net.ResolveUDPAddr("udp", hostPort(u, "5684"))
	if err != nil {
		return nil, transient(fmt.Errorf("download: resolve %s: %w", u.Host, err))
	}
	opts := []dtls.ClientOption{
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	}
	if len(sec.PSK) > 0 {
		psk := append([]byte(nil), sec.PSK...)
		opts = append(opts,
			dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
			// pion sends the client's identity in PSKIdentityHint.
			dtls.WithPSKIdentityHint([]byte(sec.PSKIdentity)),
			dtls.WithCipherSuites(
				dtls.TLS_PSK_WITH_AES_128_CCM_8,
				dtls.TLS_PSK_WITH_AES_128_CCM,
				dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
			))
	} else {
		name := sec.ServerName
		if name == "" {
			name = u.Hostname()
		}
		opts = append(opts,
			dtls.WithCertificates(sec.Certificates...),
			dtls.WithRootCAs(sec.RootCAs),
			dtls.WithServerName(name),
			dtls.WithCipherSuites(
				dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
				dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
				dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
				dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			))
	}
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, transient(fmt.Errorf("download: %w", err))
	}
	conn, err := dtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("%w: dtls: %w", ErrConnection, err)
	}
	hctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, transient(fmt.Errorf("download: dtls handshake with %s: %w", u.Host, err))
		}
		// A bad key or certificate will not get better by retrying.
		return nil, fmt.Errorf("%w: dtls handshake with %s: %w", ErrConnection, u.Host, err)
	}
	return conn, nil
}

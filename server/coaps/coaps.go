package coaps

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/pion/dtls/v3"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
)

// Listener is a coaps socket with PSKs, for go-coap's DTLS server
// (coapdtls.NewServer(...).Serve(l)).
type Listener struct {
	net.Listener
	hello *helloListener
}

// Listen opens a coaps socket at addr. lookup returns the key of a PSK
// identity, or an error for one it does not know; maxPeers bounds the
// sessions and handshakes the socket holds at once. A nil log means
// slog.Default().
func Listen(addr string, lookup func(identity []byte) ([]byte, error), log *slog.Logger, maxPeers int) (*Listener, error) {
	if log == nil {
		log = slog.Default()
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("coaps: listen %s: %w", addr, err)
	}
	// See listen.go for why the socket is not pion's own.
	hello := newHelloListener(pc, log, max(maxPeers, 1))
	l, err := dtls.NewListenerWithOptions(hello,
		dtls.WithPSK(lookup),
		// The same suites as our client offers, CCM_8 first
		// (LwM2M 1.1 Transport, 5.2.8.1).
		dtls.WithCipherSuites(dtlsconf.PSKSuites...),
		// RFC 7627: bind the master secret to the whole handshake.
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	)
	if err != nil {
		hello.Close()
		return nil, fmt.Errorf("coaps: listen %s: %w", addr, err)
	}
	return &Listener{Listener: l, hello: hello}, nil
}

// AcceptWithContext is Accept, for go-coap's DTLS server.
func (l *Listener) AcceptWithContext(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return l.Accept()
}

// Peers returns how many peers hold state on the socket: sessions and
// handshakes under way.
func (l *Listener) Peers() int { return l.hello.peers() }

// PSKIdentity returns the PSK identity of a DTLS session that a go-coap
// handler sees (w.Conn()), "" for plain UDP.
func PSKIdentity(cc *udpclient.Conn) string {
	dc, ok := cc.NetConn().(*dtls.Conn)
	if !ok {
		return ""
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return ""
	}
	// On the server side pion keeps the client's PSK identity here.
	return string(st.IdentityHint)
}

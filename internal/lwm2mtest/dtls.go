package lwm2mtest

import (
	"testing"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
)

// DTLSServer is the test server over DTLS (coaps), on pion like the
// client. Registrations, Next, WaitRegister, Conn and Forget work as on
// Server; Conn is the server's side of the DTLS session.
type DTLSServer struct {
	*Server
	dsrv *dtlsserver.Server
	dln  *coapnet.DTLSListener
	// Errors receives the server's errors (failed handshakes among them).
	Errors chan error
}

// StartDTLS listens on 127.0.0.1 at a free port with the pion server
// options (PSK or certificates) and serves until the test ends or Close.
func StartDTLS(t testing.TB, opts ...piondtls.ServerOption) *DTLSServer {
	t.Helper()
	ln, err := coapnet.NewDTLSListener("udp", "127.0.0.1:0", coapnet.NewDTLSServerOptions(opts...))
	if err != nil {
		t.Fatalf("lwm2mtest: dtls listen: %v", err)
	}
	s := &DTLSServer{
		Server: &Server{t: t, byEP: map[string]*Registration{}, notify: make(chan Registration, 64)},
		dln:    ln,
		Errors: make(chan error, 64),
	}
	r := mux.NewRouter()
	r.DefaultHandle(mux.HandlerFunc(s.handle))
	s.dsrv = coapdtls.NewServer(options.WithMux(r), options.WithBlockwise(false, 0, 0),
		options.WithErrors(func(err error) {
			select {
			case s.Errors <- err:
			default:
			}
		}))
	go s.dsrv.Serve(ln)
	t.Cleanup(s.Close)
	return s
}

// Addr is the server's "host:port".
func (s *DTLSServer) Addr() string { return s.dln.Addr().String() }

// URI is the server's coaps:// URI.
func (s *DTLSServer) URI() string { return "coaps://" + s.Addr() }

// Close stops the server.
func (s *DTLSServer) Close() {
	s.dsrv.Stop()
	s.dln.Close()
}

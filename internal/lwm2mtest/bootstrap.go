package lwm2mtest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// BootstrapRequest is one Bootstrap-Request (POST /bs) as the bootstrap
// server saw it, with the connection to send the bootstrap operations on.
type BootstrapRequest struct {
	Query []string
	Conn  *udpclient.Conn
	srv   *BootstrapServer
}

// Endpoint is the ep= of the request.
func (r BootstrapRequest) Endpoint() string {
	for _, q := range r.Query {
		if v, ok := strings.CutPrefix(q, "ep="); ok {
			return v
		}
	}
	return ""
}

// BootstrapServer is a scripted bootstrap server on 127.0.0.1: it answers
// each Bootstrap-Request with 2.04 (or Refuse's code) and then runs its
// script, which sends Bootstrap-Delete, -Write, -Read, -Discover and
// -Finish with Do. It decodes nothing.
type BootstrapServer struct {
	t      testing.TB
	addr   string
	scheme string
	stop   func()
	script func(ctx context.Context, r BootstrapRequest)

	mu     sync.Mutex
	refuse codes.Code
	// Requests receives every Bootstrap-Request.
	Requests chan BootstrapRequest
	// Refused receives every Bootstrap-Request answered with Refuse's code.
	Refused chan BootstrapRequest
	// Finished receives the code of every Bootstrap-Finish answer a
	// script sent with Finish.
	Finished chan codes.Code
}

// StartBootstrap listens on 127.0.0.1 at a free port; script runs, in a
// goroutine of its own, after each Bootstrap-Request was answered.
func StartBootstrap(t testing.TB, script func(ctx context.Context, r BootstrapRequest)) *BootstrapServer {
	t.Helper()
	ln, err := coapnet.NewListenUDP("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("lwm2mtest: listen: %v", err)
	}
	s := newBootstrapServer(t, "coap", ln.LocalAddr().String(), script)
	stop := make(chan struct{})
	srv := udp.NewServer(options.WithMux(s.router()), options.WithBlockwise(false, 0, 0), options.WithErrors(func(error) {}),
		options.WithPeriodicRunner(periodic.New(stop, 20*time.Millisecond)))
	go srv.Serve(ln)
	var once sync.Once
	s.stop = func() { once.Do(func() { close(stop); srv.Stop(); ln.Close() }) }
	t.Cleanup(s.Close)
	return s
}

// StartBootstrapDTLS is StartBootstrap over DTLS with the pion server
// options (a PSK callback, say).
func StartBootstrapDTLS(t testing.TB, script func(ctx context.Context, r BootstrapRequest), opts ...piondtls.ServerOption) *BootstrapServer {
	t.Helper()
	ln, err := coapnet.NewDTLSListener("udp", "127.0.0.1:0", coapnet.NewDTLSServerOptions(opts...))
	if err != nil {
		t.Fatalf("lwm2mtest: dtls listen: %v", err)
	}
	s := newBootstrapServer(t, "coaps", ln.Addr().String(), script)
	srv := coapdtls.NewServer(options.WithMux(s.router()), options.WithBlockwise(false, 0, 0), options.WithErrors(func(error) {}))
	go srv.Serve(ln)
	var once sync.Once
	s.stop = func() { once.Do(func() { srv.Stop(); ln.Close() }) }
	t.Cleanup(s.Close)
	return s
}

func newBootstrapServer(t testing.TB, scheme, addr string, script func(context.Context, BootstrapRequest)) *BootstrapServer {
	return &BootstrapServer{t: t, scheme: scheme, addr: addr, script: script,
		Requests: make(chan BootstrapRequest, 64), Refused: make(chan BootstrapRequest, 64), Finished: make(chan codes.Code, 64)}
}

func (s *BootstrapServer) router() *mux.Router {
	r := mux.NewRouter()
	r.DefaultHandle(mux.HandlerFunc(s.handle))
	return r
}

// URI is the server's coap:// or coaps:// URI.
func (s *BootstrapServer) URI() string { return s.scheme + "://" + s.addr }

// Close stops the server.
func (s *BootstrapServer) Close() { s.stop() }

// Refuse makes the server answer Bootstrap-Request with code (0: 2.04).
func (s *BootstrapServer) Refuse(code codes.Code) {
	s.mu.Lock()
	s.refuse = code
	s.mu.Unlock()
}

func (s *BootstrapServer) handle(w mux.ResponseWriter, r *mux.Message) {
	p, _ := r.Options().Path()
	if strings.Trim(p, "/") != "bs" || r.Code() != codes.POST {
		_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
		return
	}
	q, _ := r.Options().Queries()
	cc, _ := w.Conn().(*udpclient.Conn)
	s.mu.Lock()
	refuse := s.refuse
	s.mu.Unlock()
	req := BootstrapRequest{Query: q, Conn: cc, srv: s}
	if refuse != 0 {
		_ = w.SetResponse(refuse, message.TextPlain, nil)
		select {
		case s.Refused <- req:
		default:
		}
		return
	}
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
	select {
	case s.Requests <- req:
	default:
	}
	if s.script != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s.script(ctx, req)
		}()
	}
}

// ServerURI is the URI of the bootstrap server that took the request.
func (r BootstrapRequest) ServerURI() string { return r.srv.URI() }

// Finish sends Bootstrap-Finish, reports the answer's code on the
// server's Finished and returns the answer.
func (r BootstrapRequest) Finish(ctx context.Context) (Response, error) {
	resp, err := Do(ctx, r.Conn, codes.POST, "/bs", -1, nil)
	if err == nil {
		select {
		case r.srv.Finished <- resp.Code:
		default:
		}
	}
	return resp, err
}

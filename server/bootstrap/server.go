package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpserver "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/lwm2m-fota/lwm2m/coaptx"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/server/coaps"
)

// Errors of the Server.
var (
	ErrClosed       = errors.New("bootstrap: closed")
	ErrNotListening = errors.New("bootstrap: not listening")
)

// Bounds of a zero Server.
const (
	// DefaultMaxConcurrent bounds the bootstraps that run at once.
	DefaultMaxConcurrent = 64
	// DefaultTimeout bounds one whole bootstrap, from the request to
	// Bootstrap-Finish's answer.
	DefaultTimeout = 2 * time.Minute
	// DefaultRequestTimeout bounds one exchange with the device.
	DefaultRequestTimeout = 30 * time.Second
)

// MaxEndpointLength bounds an endpoint client name in a request.
const MaxEndpointLength = 255

// Server is an LwM2M bootstrap server. Configure it through its fields,
// then Listen and Serve, as a server.Server:
//
//	bs := &bootstrap.Server{Addr: "127.0.0.1:5783", Config: cfg}
//	if err := bs.Listen(); err != nil { ... } // bs.LocalAddr() is known
//	go bs.Serve(ctx)                           // until ctx ends or bs.Close()
//
// A device's Bootstrap-Request (POST /bs?ep=EP) is answered 2.04 when
// Config has an entry for EP (or a Default one); the server then deletes
// and writes what the entry says, over the same socket and session, and
// ends with Bootstrap-Finish. Every request, refused or not, is recorded
// in History.
type Server struct {
	// Addr is the UDP address for plain CoAP; empty means none.
	Addr string
	// DTLSAddr is the UDP address for CoAP over DTLS with PSKs; empty
	// means none. At least one of Addr and DTLSAddr is needed.
	DTLSAddr string
	// PSKs maps a PSK identity to its key, for DTLSAddr (the format of
	// server.LoadPSKFile). Listen copies it.
	PSKs map[string][]byte
	// Config says what each endpoint receives. Listen checks it;
	// SetConfig replaces it while the server runs.
	Config *Config
	// History records every attempt; nil means a new in-memory one,
	// which Close closes. A History given here is the caller's to close,
	// after Close.
	History *History
	// Logger receives the outcome of each attempt; nil means
	// slog.Default(). Keys are never logged.
	Logger *slog.Logger
	// MaxConcurrent bounds the bootstraps that run at once (one per
	// endpoint at most); zero means DefaultMaxConcurrent. A request
	// beyond it gets 5.03 Service Unavailable with Max-Age.
	MaxConcurrent int
	// Timeout bounds a whole bootstrap and RequestTimeout each exchange
	// in it; a device that stops answering is abandoned after either.
	// Zero means DefaultTimeout and DefaultRequestTimeout.
	Timeout        time.Duration
	RequestTimeout time.Duration

	mu        sync.Mutex
	cfg       *Config
	hist      *History
	ownHist   bool
	coap      *udpserver.Server
	lis       *coapnet.UDPConn
	dtls      *dtlsserver.Server
	dtlsLis   *coaps.Listener
	running   map[string]bool // endpoints being bootstrapped
	ctx       context.Context // ends at Close: cancels the bootstraps
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	done      chan struct{}
	listening bool
	closed    bool
	lastWarn  time.Time
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) maxConcurrent() int {
	if s.MaxConcurrent > 0 {
		return s.MaxConcurrent
	}
	return DefaultMaxConcurrent
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

func (s *Server) requestTimeout() time.Duration {
	if s.RequestTimeout > 0 {
		return s.RequestTimeout
	}
	return DefaultRequestTimeout
}

// Listen checks Config and binds the sockets. Call Serve next.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listening {
		return errors.New("bootstrap: already listening")
	}
	if s.Config == nil {
		return errors.New("bootstrap: no Config")
	}
	if err := s.Config.Validate(); err != nil {
		return err
	}
	if s.Addr == "" && s.DTLSAddr == "" {
		return errors.New("bootstrap: neither Addr nor DTLSAddr")
	}
	if s.DTLSAddr != "" && len(s.PSKs) == 0 {
		return fmt.Errorf("bootstrap: DTLSAddr %s without PSKs", s.DTLSAddr)
	}
	log := s.logger()
	s.cfg = s.Config
	s.hist, s.ownHist = s.History, false
	if s.hist == nil {
		s.hist, s.ownHist = NewHistory(), true
	}
	s.running = map[string]bool{}
	s.done = make(chan struct{})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Idle connections outlive the longest bootstrap.
	idle := 2*s.timeout() + time.Minute
	if s.Addr != "" {
		ua, err := net.ResolveUDPAddr("udp", s.Addr)
		var pc *net.UDPConn
		if err == nil {
			pc, err = net.ListenUDP("udp", ua)
		}
		if err != nil {
			return fmt.Errorf("bootstrap: listen %s: %w", s.Addr, err)
		}
		s.lis = coapnet.NewUDPConn("udp", pc)
		tx := coaptx.Params{}.Defaults()
		s.coap = coapudp.NewServer(
			options.WithHandlerFunc(s.handler("coap")),
			options.WithBlockwise(false, blockwise.SZX1024, time.Minute),
			options.WithInactivityMonitor(idle, func(cc *udpclient.Conn) { _ = cc.Close() }),
			// Retransmit on time (RFC 7252 §4.2): go-coap's runner
			// ticks every 4 s by default.
			options.WithPeriodicRunner(periodic.New(s.done, 200*time.Millisecond)),
			options.WithTransmission(1, tx.AckTimeout, uint32(tx.MaxRetransmit), tx.AckRandomFactor),
			options.WithErrors(func(err error) { log.Debug("bootstrap coap", "err", err) }),
		)
	}
	if s.DTLSAddr != "" {
		keys := make(map[string][]byte, len(s.PSKs))
		for id, k := range s.PSKs {
			keys[id] = bytes.Clone(k)
		}
		lookup := func(identity []byte) ([]byte, error) {
			if k, ok := keys[string(identity)]; ok {
				return k, nil
			}
			log.Warn("bootstrap dtls: unknown PSK identity", "identity", string(identity))
			return nil, fmt.Errorf("unknown PSK identity %q", identity)
		}
		// Room for the bootstraps and as many handshakes besides.
		l, err := coaps.Listen(s.DTLSAddr, lookup, log, 2*s.maxConcurrent()+16)
		if err != nil {
			if s.lis != nil {
				s.lis.Close()
				s.lis, s.coap = nil, nil
			}
			return fmt.Errorf("bootstrap: %w", err)
		}
		s.dtlsLis = l
		s.dtls = coapdtls.NewServer(
			options.WithHandlerFunc(s.handler("coaps")),
			options.WithBlockwise(false, blockwise.SZX1024, time.Minute),
			options.WithInactivityMonitor(idle, func(cc *udpclient.Conn) { _ = cc.Close() }),
			options.WithErrors(func(err error) { log.Debug("bootstrap coaps", "err", err) }),
		)
	}
	s.listening = true
	attrs := []any{"endpoints", len(s.cfg.Endpoints)}
	if s.lis != nil {
		attrs = append(attrs, "coap", s.lis.LocalAddr().String())
	}
	if s.dtlsLis != nil {
		attrs = append(attrs, "coaps", s.dtlsLis.Addr().String(), "psk_identities", len(s.PSKs))
	}
	log.Info("bootstrap server listening", attrs...)
	return nil
}

// LocalAddr returns the bound CoAP address, or nil when none.
func (s *Server) LocalAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.LocalAddr()
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

// SetConfig replaces the configuration for the requests that come next;
// bootstraps under way finish with the one they started with.
func (s *Server) SetConfig(c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.cfg = c
	s.mu.Unlock()
	return nil
}

// Attempts returns ep's bootstrap attempts, oldest first.
func (s *Server) Attempts(ep string) []Attempt {
	s.mu.Lock()
	h := s.hist
	s.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.Endpoint(ep)
}

// Serve answers until the server is closed, and returns nil then. ctx
// ending closes it.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if !s.listening {
		s.mu.Unlock()
		return ErrNotListening
	}
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	cs, l, ds, dl, done := s.coap, s.lis, s.dtls, s.dtlsLis, s.done
	s.mu.Unlock()
	errc := make(chan error, 2)
	if cs != nil {
		go func() { errc <- cs.Serve(l) }()
	}
	if ds != nil {
		go func() { errc <- ds.Serve(dl) }()
	}
	select {
	case <-ctx.Done():
		s.Close()
		return nil
	case <-done:
		return nil
	case err := <-errc:
		s.Close()
		select {
		case <-done:
			return nil
		default:
		}
		return err
	}
}

// Close stops the server: Serve returns, bootstraps under way are
// abandoned (and recorded), the sockets close. It may be called more than
// once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed || !s.listening {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.cancel()
	cs, l, ds, dl := s.coap, s.lis, s.dtls, s.dtlsLis
	s.mu.Unlock()
	s.wg.Wait()
	if cs != nil {
		cs.Stop()
		l.Close() // Stop closes it only once Serve has run
	}
	if ds != nil {
		ds.Stop()
		dl.Close()
	}
	if s.ownHist {
		return s.hist.Close()
	}
	return nil
}

// request is a Bootstrap-Request as the handler parsed it.
type request struct {
	ep, pct string
}

// parseRequest reads ?ep=EP&pct=FMT (LwM2M 1.1 Core §6.1.7.1 / Table
// 8.2.2-1); unknown parameters are ignored.
func parseRequest(r *pool.Message) (request, error) {
	var req request
	qs, err := r.Options().Queries()
	if err != nil && !errors.Is(err, message.ErrOptionNotFound) {
		return req, errors.New("bad Uri-Query")
	}
	seen := map[string]bool{}
	for _, q := range qs {
		k, v, _ := strings.Cut(q, "=")
		if k != "ep" && k != "pct" {
			continue
		}
		if seen[k] {
			return req, fmt.Errorf("%s given twice", k)
		}
		seen[k] = true
		if k == "ep" {
			req.ep = v
		} else {
			req.pct = v
		}
	}
	switch {
	case req.ep == "":
		return req, errors.New("no endpoint client name (ep)")
	case len(req.ep) > MaxEndpointLength:
		return req, fmt.Errorf("endpoint client name longer than %d bytes", MaxEndpointLength)
	case !utf8.ValidString(req.ep) || strings.IndexFunc(req.ep, unicode.IsControl) >= 0:
		return req, errors.New("endpoint client name is not printable UTF-8")
	}
	return req, nil
}

// writeFormat is the content format of the writes: the device's
// preferred one (pct) when we can encode it, TLV otherwise, which every
// LwM2M 1.0 and 1.1 client reads.
func writeFormat(pct string) (content.Format, error) {
	if pct == "" {
		return content.TLV, nil
	}
	n, err := strconv.ParseUint(pct, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("pct %q is not a content format number", pct)
	}
	switch f := content.Format(n); f {
	case content.SenMLJSON, content.SenMLCBOR:
		return f, nil
	}
	return content.TLV, nil
}

// handler returns the CoAP handler of one transport.
func (s *Server) handler(transport string) func(*responsewriter.ResponseWriter[*udpclient.Conn], *pool.Message) {
	return func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
		if r.Type() == message.Acknowledgement || r.Type() == message.Reset || r.Code() == codes.Empty || r.Code() >= 32 {
			// Never answer a stray response (RFC 7252 §4.2).
			return
		}
		p, err := r.Options().Path()
		if err != nil && !errors.Is(err, message.ErrOptionNotFound) {
			setCode(w, codes.BadOption, "")
			return
		}
		if strings.Trim(p, "/") != "bs" {
			setCode(w, codes.NotFound, "")
			return
		}
		if r.Code() != codes.POST {
			setCode(w, codes.MethodNotAllowed, "")
			return
		}
		s.bootstrapRequest(w, r, transport)
	}
}

func setCode(w *responsewriter.ResponseWriter[*udpclient.Conn], c codes.Code, diag string) {
	var body *bytes.Reader
	if diag != "" {
		body = bytes.NewReader([]byte(diag))
		_ = w.SetResponse(c, message.TextPlain, body)
		return
	}
	_ = w.SetResponse(c, message.TextPlain, nil)
}

// bootstrapRequest admits or refuses a Bootstrap-Request, and starts the
// bootstrap once the 2.04 is on its way.
func (s *Server) bootstrapRequest(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message, transport string) {
	cc := w.Conn()
	a := Attempt{Started: time.Now(), Peer: cc.RemoteAddr().String(), Transport: transport}
	if transport == "coaps" {
		a.PSKIdentity = coaps.PSKIdentity(cc)
	}
	req, err := parseRequest(r)
	if err != nil {
		// Nothing to record it under.
		s.logger().Debug("bootstrap request refused", "peer", a.Peer, "err", err)
		setCode(w, codes.BadRequest, err.Error())
		return
	}
	a.Endpoint = req.ep
	f, err := writeFormat(req.pct)
	if err != nil {
		s.refuse(w, a, codes.BadRequest, err.Error())
		return
	}
	a.Format = f.String()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		setCode(w, codes.ServiceUnavailable, "")
		return
	}
	entry, ok := s.cfg.entry(req.ep)
	switch {
	case !ok:
		s.mu.Unlock()
		// LwM2M 1.1 Core Table 8.2.2-1: 4.00 "Unknown Endpoint Client Name".
		s.refuse(w, a, codes.BadRequest, "unknown endpoint client name")
		return
	case entry.BootstrapIdentity != "" && (transport != "coaps" || a.PSKIdentity != entry.BootstrapIdentity):
		s.mu.Unlock()
		s.refuse(w, a, codes.BadRequest, "endpoint client name does not match the PSK identity")
		return
	case s.running[req.ep]:
		s.mu.Unlock()
		s.busy(w, a, "a bootstrap of this endpoint is under way")
		return
	case len(s.running) >= s.maxConcurrent():
		s.mu.Unlock()
		s.busy(w, a, "too many bootstraps at once")
		return
	}
	s.running[req.ep] = true
	s.wg.Add(1)
	ctx := s.ctx
	s.mu.Unlock()
	setCode(w, codes.Changed, "")
	// The device learns that its request succeeded before the first
	// Bootstrap-Delete or Write reaches it. go-coap runs no callback
	// when the answer cannot be sent, so run waits for the connection's
	// end too.
	sent := make(chan struct{})
	if !responsewriter.AfterWrite(r.Context(), func() { close(sent) }) {
		close(sent)
	}
	go s.run(ctx, cc, a, entry, f, sent)
}

// busy refuses with 5.03 and a Max-Age of the longest a bootstrap takes
// (RFC 7252 §5.9.3.4).
func (s *Server) busy(w *responsewriter.ResponseWriter[*udpclient.Conn], a Attempt, why string) {
	s.refuse(w, a, codes.ServiceUnavailable, why)
	var buf [4]byte
	n, _ := message.EncodeUint32(buf[:], uint32(s.timeout()/time.Second))
	w.Message().SetOptionBytes(message.MaxAge, buf[:n])
}

// refuse answers code with a diagnostic payload and records the attempt.
func (s *Server) refuse(w *responsewriter.ResponseWriter[*udpclient.Conn], a Attempt, code codes.Code, why string) {
	setCode(w, code, why)
	a.Ended = time.Now()
	a.Outcome, a.Code, a.Error = Refused, codeString(code), why
	s.record(a)
	// A flood of refusals logs one warning a second, the rest at debug.
	level := slog.LevelDebug
	s.mu.Lock()
	if now := time.Now(); now.Sub(s.lastWarn) >= time.Second {
		s.lastWarn, level = now, slog.LevelWarn
	}
	s.mu.Unlock()
	s.logger().Log(context.Background(), level, "bootstrap request refused", "ep", a.Endpoint, "peer", a.Peer,
		"transport", a.Transport, "identity", a.PSKIdentity, "code", a.Code, "why", why)
}

func (s *Server) record(a Attempt) {
	s.mu.Lock()
	h := s.hist
	s.mu.Unlock()
	h.Add(a)
}

// codeString formats a CoAP code as "2.04".
func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d", c>>5, c&0x1f)
}

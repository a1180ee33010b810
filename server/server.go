package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/bodydeadline"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

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
	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server/coaps"
	"github.com/lwm2m-fota/lwm2m/server/images"
)

// Errors returned by the Server.
var (
	ErrNotRegistered = errors.New("server: endpoint not registered")
	ErrClosed        = errors.New("server: closed")
	ErrNotListening  = errors.New("server: not listening")
)

// Registration limits of a zero Server.
const (
	DefaultMaxLifetime      = 24 * time.Hour
	DefaultMaxRegistrations = 10000
)

// DefaultAddr is the CoAP address a zero Server listens on (LwM2M 1.1
// Transport, 5.1: the IANA port for coap).
const DefaultAddr = ":5683"

// IdleTimeout is how long the server's HTTP listeners (and lwm2m
// server's API) keep a kept-alive connection that sends no next request:
// without one, net/http keeps it forever, and a peer that opens many
// exhausts the server's file descriptors.
const IdleTimeout = 2 * time.Minute

// Server is a small LwM2M server: a registration interface, device
// management towards registered clients, and firmware delivery. Configure
// it through its fields before calling Listen; the zero value listens on
// DefaultAddr and keeps registrations in memory.
type Server struct {
	// Addr is the UDP address for CoAP, DefaultAddr when empty.
	Addr string
	// DTLSAddr, when set, is the UDP address for CoAP over DTLS 1.2
	// (coaps) with the pre-shared keys in PSKs.
	DTLSAddr string
	// PSKs maps a PSK identity to its key, for DTLSAddr. It is copied by
	// Listen. A device may register over DTLS under any endpoint name;
	// its identity is recorded in the Registration.
	PSKs map[string][]byte
	// ImageAddr is the UDP address that serves published images over
	// CoAP (Block2). Empty means the CoAP address's host with a free port.
	ImageAddr string
	// HTTPAddr, when set, is where Serve also serves published images
	// over HTTP (with Range requests) for pull updates.
	HTTPAddr string
	// PublicHost is the host that devices use to reach this server, put
	// into Package URIs. When empty the server picks its own address on the
	// route towards the device.
	PublicHost string
	// Store keeps registrations across restarts; nil means in memory.
	Store Store
	// Logger receives registration, update and error logs; nil means slog.Default().
	Logger *slog.Logger
	// Grace is added to a registration's lifetime before it expires,
	// to absorb a late Update. Zero means 30 seconds.
	Grace time.Duration
	// MaxLifetime caps a registration's lifetime; zero means
	// DefaultMaxLifetime. A longer requested lifetime is accepted and
	// clamped: the registration expires at the cap (plus Grace), and
	// the server writes the cap to the device's Server Object Lifetime
	// (/1/x/1) so that it updates in time. A response cannot change a
	// lifetime (Core 6.2.1).
	MaxLifetime time.Duration
	// MaxRegistrations caps the number of registered endpoints (and of
	// endpoints bound to a DTLS identity); zero means
	// DefaultMaxRegistrations. A Register of a new endpoint beyond it
	// gets 5.03 Service Unavailable with Max-Age.
	MaxRegistrations int
	// RequestTimeout bounds a single CoAP exchange with a device when the
	// caller's context has no deadline. Zero means 30 seconds.
	RequestTimeout time.Duration
	// Inventory makes the server read each device's Firmware Version
	// (/3/0/3), firmware update State and Update Result (/5/0/3, /5/0/5)
	// after it registers, for DeviceStatus and the web console.
	Inventory bool

	// QueueWindow is how long a queue-mode device is taken to be awake
	// after it last sent something; zero means MAX_TRANSMIT_WAIT of the
	// server's transmission parameters (93 s by default, RFC 7252
	// §4.8.2), which LwM2M 1.1 recommends to clients.
	QueueWindow time.Duration
	// MaxQueued bounds the operations waiting for one sleeping device;
	// zero means DefaultMaxQueued. One more fails with ErrQueueFull.
	MaxQueued int
	// QueueExpiry, when positive, bounds how long an operation waits for
	// a sleeping device (ErrQueueExpired). Zero leaves it to the
	// caller's context and to the registration, whose end fails what
	// still waits with ErrNotRegistered.
	QueueExpiry time.Duration
	// MaxSentValues bounds the resources whose last sent value (Send,
	// /dp) is kept per device; zero means DefaultMaxSentValues. Beyond
	// it, the resource heard from longest ago is forgotten.
	MaxSentValues int
	// OnSend, when set, is called with the values of every Send the
	// server accepted (LwM2M 1.1 Core, Information Reporting), after they
	// were stored. It runs on the server's goroutine and must return
	// quickly; vals is the caller's to keep.
	OnSend func(ep string, vals []SentValue)

	// statePoll, when set, replaces pollInterval: tests make it long so
	// that an update can complete only through notifications.
	statePoll time.Duration

	events   hub     // Subscribe and Publish
	devs     devices // DeviceStatus and History
	mu       sync.Mutex
	regs     map[string]*Registration   // by ID
	byEP     map[string]string          // endpoint -> ID
	bindings map[string]string          // endpoint -> the DTLS identity it is bound to
	regIPs   map[netip.Addr]int         // registrations per device IP, for the image port
	byAddr   map[string]map[string]bool // registration IDs per device address (host:port), for Send
	watchers map[string][]chan Registration
	imgs     *images.Store // created by Listen or the first Publish
	coap     *udpserver.Server
	lis      *coapnet.UDPConn
	httpLis  net.Listener
	imgLis   *net.UDPConn
	dtls     *dtlsserver.Server
	dtlsLis  *coaps.Listener
	sessions map[string]*udpclient.Conn // DTLS sessions by remote address
	httpSrv  *http.Server
	closed   bool
	done     chan struct{}
	running  chan struct{} // closed once go-coap serves on lis (see Listen)
	now      func() time.Time
	tx       coaptx.Params // zero: RFC 7252's defaults; for go-coap's exchanges and a push alike
	logMu    sync.Mutex
	warned   map[string]time.Time // when noisy last logged each message at Warn
	updating map[string]bool      // endpoints with an Update running, under mu

	// Queue mode and Send (queue.go, send.go), under mu.
	queues       map[string]*devQueue                // operations waiting for sleeping devices, by endpoint
	values       map[string]map[model.Path]sentEntry // the last sent values, by endpoint
	sendSeq      uint64                              // orders sentEntry
	sentTotal    int                                 // entries in values
	maxSentTotal int                                 // bounds sentTotal; zero: defaultMaxSentTotal

	// strictLoopback makes the image port verify loopback addresses
	// like any other, so that tests on loopback can exercise the Echo
	// (images.Store.StrictLoopback).
	strictLoopback bool
	// handshakeTimeout bounds a DTLS handshake; zero means go-coap's
	// 30 s. Tests shorten it.
	handshakeTimeout time.Duration
	// pushDial opens a push's socket; nil means udpsock.Dial. Tests
	// replace it.
	pushDial func(laddr, raddr netip.AddrPort, tick time.Duration) (*udpsock.Conn, error)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *Server) maxLifetime() int64 {
	if s.MaxLifetime > 0 {
		return max(int64(s.MaxLifetime/time.Second), 1)
	}
	return int64(DefaultMaxLifetime / time.Second)
}

func (s *Server) maxRegistrations() int {
	if s.MaxRegistrations > 0 {
		return s.MaxRegistrations
	}
	return DefaultMaxRegistrations
}

func (s *Server) grace() time.Duration {
	if s.Grace > 0 {
		return s.Grace
	}
	return 30 * time.Second
}

// Listen opens the UDP socket (and the HTTP one when HTTPAddr is set) and
// loads stored registrations. Call Serve next.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis != nil {
		return errors.New("server: already listening")
	}
	if s.Store == nil {
		s.Store = &MemoryStore{}
	}
	s.regs = make(map[string]*Registration)
	s.byEP = make(map[string]string)
	s.watchers = make(map[string][]chan Registration)
	s.queues = make(map[string]*devQueue)
	s.values = make(map[string]map[model.Path]sentEntry)
	s.imageStoreLocked()
	s.done = make(chan struct{})
	stored, err := s.Store.List()
	if err != nil {
		s.logger().Warn("loading registrations", "err", err)
	}
	s.bindings = make(map[string]string)
	s.regIPs = make(map[netip.Addr]int)
	s.byAddr = make(map[string]map[string]bool)
	if bs, ok := s.Store.(BindingStore); ok {
		b, err := bs.Bindings()
		if err != nil {
			s.logger().Warn("loading dtls bindings", "err", err)
		}
		for ep, id := range b {
			s.bindings[ep] = id
		}
	}
	for _, r := range stored {
		// A registration stored under a larger cap, or before there was
		// one, expires at today's.
		r.Lifetime = min(r.Lifetime, s.maxLifetime())
		if r.LastSeen.IsZero() {
			r.LastSeen = r.Updated
		}
		s.regs[r.ID] = &r
		s.byEP[r.Endpoint] = r.ID
		s.trackAddrLocked(r.ID, r.Addr, 1)
		if r.Secure {
			if _, ok := s.bindings[r.Endpoint]; !ok {
				s.bindings[r.Endpoint] = r.PSKIdentity
			}
		}
	}
	addr := s.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	pc, err := listenShared(addr)
	if err != nil {
		return fmt.Errorf("server: listen %s: %w", addr, err)
	}
	l := coapnet.NewUDPConn("udp", pc)
	imgAddr := s.ImageAddr
	if imgAddr == "" {
		host, _, _ := net.SplitHostPort(l.LocalAddr().String())
		imgAddr = net.JoinHostPort(host, "0")
	}
	ua, err := net.ResolveUDPAddr("udp", imgAddr)
	var il *net.UDPConn
	if err == nil {
		il, err = net.ListenUDP("udp", ua)
	}
	if err != nil {
		l.Close()
		return fmt.Errorf("server: listen for images %s: %w", imgAddr, err)
	}
	s.imgLis = il
	if s.HTTPAddr != "" {
		hl, err := net.Listen("tcp", s.HTTPAddr)
		if err != nil {
			l.Close()
			il.Close()
			return fmt.Errorf("server: listen http %s: %w", s.HTTPAddr, err)
		}
		s.httpLis = hl
		s.httpSrv = &http.Server{Handler: bodydeadline.Wrap(bodydeadline.Default, s.imgs.Handler()),
			ReadHeaderTimeout: 10 * time.Second, IdleTimeout: IdleTimeout}
	}
	if s.DTLSAddr != "" {
		if err := s.listenDTLS(); err != nil {
			l.Close()
			il.Close()
			if s.httpLis != nil {
				s.httpLis.Close()
				s.httpLis, s.httpSrv = nil, nil
			}
			return err
		}
	}
	s.lis = l
	log := s.logger()
	tx := s.tx.Defaults()
	// go-coap's Serve starts the periodic runner right after it takes
	// the socket; from then on NewConn works, so that is our signal.
	running := make(chan struct{})
	s.running = running
	runner := periodic.New(s.done, 200*time.Millisecond)
	var started sync.Once
	s.coap = coapudp.NewServer(
		options.WithHandlerFunc(s.handle),
		// Firmware moves through our own Block1/Block2 code so that
		// images stream from disk instead of being held in memory.
		options.WithBlockwise(false, blockwise.SZX1024, time.Minute),
		// Devices talk rarely; keep the per-peer state (and its
		// observations) alive across long quiet periods.
		options.WithInactivityMonitor(2*time.Hour, func(cc *udpclient.Conn) { _ = cc.Close() }),
		// go-coap retransmits from its periodic runner, which ticks every
		// 4 s by default; tick well within ACK_TIMEOUT (RFC 7252 §4.2).
		options.WithPeriodicRunner(func(f func(time.Time) bool) {
			started.Do(func() { close(running) })
			runner(f)
		}),
		options.WithTransmission(1, tx.AckTimeout, uint32(tx.MaxRetransmit), tx.AckRandomFactor),
		options.WithErrors(func(err error) { log.Debug("coap", "err", err) }),
	)
	attrs := []any{"coap", l.LocalAddr().String(), "images", il.LocalAddr().String(), "registrations", len(stored)}
	if s.dtlsLis != nil {
		attrs = append(attrs, "coaps", s.dtlsLis.Addr().String(), "psk_identities", len(s.PSKs))
	}
	s.logger().Info("lwm2m server listening", attrs...)
	return nil
}

// listenShared opens the CoAP socket with SO_REUSEPORT, so that a push
// can bind a socket connected to one device to the same port. A plain
// bind first claims the port: SO_REUSEPORT alone would let a second
// server on the same port start and share the traffic.
func listenShared(addr string) (*net.UDPConn, error) {
	probe, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		probe.Close()
		return nil, err
	}
	port := probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()
	lc := net.ListenConfig{Control: udpsock.ReusePort}
	pc, err := lc.ListenPacket(context.Background(), "udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// LocalAddr returns the bound CoAP address, or nil before Listen.
func (s *Server) LocalAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.LocalAddr()
}

// ImageLocalAddr returns the UDP address that serves images over CoAP, or
// nil before Listen.
func (s *Server) ImageLocalAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.imgLis == nil {
		return nil
	}
	return s.imgLis.LocalAddr()
}

// HTTPLocalAddr returns the bound HTTP image address, or nil when none.
func (s *Server) HTTPLocalAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpLis == nil {
		return nil
	}
	return s.httpLis.Addr()
}

// Serve runs the server until it is closed, and returns nil then. ctx
// ending closes it: cancelling ctx and calling Close are one and the same
// stop.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.lis == nil {
		s.mu.Unlock()
		return ErrNotListening
	}
	cs, l, done := s.coap, s.lis, s.done
	hs, hl := s.httpSrv, s.httpLis
	ds, dl := s.dtls, s.dtlsLis
	il, imgs := s.imgLis, s.imgs
	s.mu.Unlock()
	go imgs.Serve(il)

	errc := make(chan error, 3)
	go func() { errc <- cs.Serve(l) }()
	if ds != nil {
		go func() { errc <- ds.Serve(dl) }()
	}
	if hs != nil {
		go func() {
			if err := hs.Serve(hl); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	// Registrations loaded from the Store may have lapsed while the
	// server was down.
	s.expire(s.clock())
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
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
		case <-tick.C:
			s.expire(s.clock())
		}
	}
}

// ListenAndServe calls Listen and then Serve.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Close stops the server: Serve returns, and the sockets and published
// images are closed. It is the one way a server stops (Serve calls it
// when its ctx ends) and may be called more than once. Close leaves the
// Store open: whoever opened it closes it, after Close.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed || s.lis == nil {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	// No Update will wake a sleeping device now: what waits for one ends.
	for ep := range s.queues {
		s.failQueueLocked(ep, ErrClosed)
	}
	cs, l, hs, ds, dl, il := s.coap, s.lis, s.httpSrv, s.dtls, s.dtlsLis, s.imgLis
	imgs := s.imgs
	s.mu.Unlock()
	cs.Stop()
	l.Close() // Stop closes it only once Serve has run
	il.Close()
	if ds != nil {
		ds.Stop()
		dl.Close() // Stop closes it only once Serve has run
	}
	if hs != nil {
		hs.Close()
	}
	imgs.Close()
	return nil
}

// handle dispatches incoming CoAP requests: the registration interface
// under /rd, published images under /fw and Send at /dp.
func (s *Server) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	if r.Type() == message.Acknowledgement || r.Type() == message.Reset || r.Code() == codes.Empty || r.Code() >= 32 {
		// go-coap hands over an ACK or RST that matches no exchange of
		// ours, and responses nobody asked for. Answering one would send
		// a fresh confirmable message, retransmitted up to 4 times, to
		// whatever address the datagram claims to come from (RFC 7252
		// §4.2, §11.3): ignore them.
		return
	}
	segs, err := r.Options().Path()
	if errors.Is(err, message.ErrOptionNotFound) {
		segs, err = "", nil
	}
	if err != nil {
		setCode(w, codes.BadOption)
		return
	}
	path := splitPath(segs)
	switch {
	case len(path) >= 1 && path[0] == "rd":
		s.handleRD(w, r, path[1:])
	case len(path) == 2 && path[0] == "fw":
		s.imageStore().HandleCoAP(w, r, isSecure(w.Conn()))
	case len(path) == 1 && path[0] == "dp":
		s.handleSend(w, r)
	default:
		setCode(w, codes.NotFound)
	}
}

func splitPath(p string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			if i > start {
				out = append(out, p[start:i])
			}
			start = i + 1
		}
	}
	return out
}

func setCode(w *responsewriter.ResponseWriter[*udpclient.Conn], c codes.Code) {
	_ = w.SetResponse(c, message.TextPlain, nil)
}

// DefaultMaxPackageSize bounds a firmware package that an operator
// uploads (package server/httpapi's /api/update, package server/campaign's
// packages) where no other limit is configured.
const DefaultMaxPackageSize = 256 << 20

package lwm2m

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/coaptx"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// Sentinel errors of the client.
var (
	ErrConfig      = errors.New("lwm2m: invalid configuration")
	ErrObjectExist = errors.New("lwm2m: object already added")
)

// TxParams are the CoAP transmission parameters of RFC 7252 §4.8. The zero
// value means the RFC's defaults.
type TxParams = coaptx.Params

// Config configures a Client. Only Endpoint and Server (or Provisioning)
// are required; the other fields have sensible zero values.
type Config struct {
	// Endpoint is the client's endpoint name (ep=).
	Endpoint string
	// Server is the LwM2M server's URI, "coap://host:port". IPv6 hosts
	// go in brackets. It becomes the one server account /0/0 and /1/0,
	// with Lifetime, ShortServerID, DefaultPmin, DefaultPmax and
	// Credentials below.
	Server string
	// Provisioning, instead of Server, starts the client from a full set
	// of Security (/0), Server (/1) and Access Control (/2) instances:
	// several servers, say, as a factory file or a bootstrap left them.
	// The client registers with every LwM2M server it describes. Set
	// Server or Provisioning, not both; Lifetime, ShortServerID,
	// DefaultPmin, DefaultPmax and Credentials are then unused (the
	// instances hold them), and Lifetime is only the fallback of a Server
	// instance without /1/x/1.
	Provisioning *Provisioning
	// Lifetime of the registration (lt=); default 86400 s, the Server
	// object's default. The client updates its registration well before it ends.
	Lifetime time.Duration
	// ShortServerID is /1/0/0; default 1.
	ShortServerID uint16
	// DefaultPmin and DefaultPmax are the server's default observation
	// periods (/1/0/2, /1/0/3). Zero pmax means no periodic notifications.
	DefaultPmin, DefaultPmax time.Duration
	// Tx are the CoAP transmission parameters of the server connection.
	Tx TxParams
	// RetryMin and RetryMax bound the exponential backoff between attempts
	// to reach an unreachable server; defaults 1 s and 5 min.
	RetryMin, RetryMax time.Duration
	// PreferredFormat answers reads of several resources when the server
	// sends no Accept option, and is advertised in the registration
	// (</>;ct=). Default TLV, which LwM2M 1.0 servers also read.
	PreferredFormat content.Format
	// MaxAssembledWrite caps a write, block-wise or in one datagram, to
	// an object that is not a StreamWriter; default 64 KiB. Larger writes
	// get 4.13 with Size1 set to it (RFC 7959 §2.9.3). A request in one
	// datagram is read up to 64 KiB over UDP and about 8 KiB over DTLS
	// (pion's read buffer), whatever the MTU.
	MaxAssembledWrite int
	// BlockTimeout abandons a block-wise write whose next block has not come
	// for this long; default EXCHANGE_LIFETIME (247 s, RFC 7252 §4.8.2),
	// after which the server has surely given up.
	BlockTimeout time.Duration
	// MaxObservations caps the observations the server may hold at once;
	// default 64. Each costs a goroutine and a copy of the last value, and
	// each is notified of a change: without a cap a server could make one
	// State change cost thousands of notifications. An observation beyond
	// the cap is refused with 5.03 Service Unavailable (docs/SECURITY.md).
	MaxObservations int
	// NonConfirmableNotifications sends notifications Non-confirmable,
	// with a Confirmable one at least every 24 h (RFC 7641 §4.5). The
	// default is Confirmable: a lost State notification of /5 would
	// otherwise leave the server unaware until pmax. The con attribute of
	// Write-Attributes (LwM2M 1.2) overrides this per path.
	NonConfirmableNotifications bool
	// Version is the LwM2M version the client registers with and speaks:
	// Version11 (default) or Version10, which registers with lwm2m=1.0
	// and accepts only the content formats of LwM2M 1.0.
	Version string
	// Logger receives the client's logs; default slog.Default().
	Logger *slog.Logger
	// Transport carries the connection to Config.Server when its scheme
	// is not coap; coaps.Configure sets it for coaps. Nil means plain UDP.
	// It serves that one account: the others (from Provisioning or a
	// bootstrap) get theirs from TransportFor.
	Transport Transport
	// TransportFor, if set, returns the transport of a server account
	// whose URI scheme is not coap (coaps, for one), given its URI and
	// the credentials of its Security instance. An account for which
	// neither it nor Transport provides one is logged and not served;
	// the other accounts are.
	TransportFor func(serverURI string, cr Credentials) (Transport, error)
	// Credentials, if set, are recorded in the Security object
	// (/0/0/2..5); coaps.Configure sets them with Transport.
	Credentials *Credentials

	// Bootstrap (LwM2M 1.1 Core §6.1; doc.go, docs/BOOTSTRAP.md).
	//
	// Bootstrap is the bootstrap server's URI, "coap://host:port" or, with
	// BootstrapCredentials and TransportFor, "coaps://host:port". A client
	// with a bootstrap server and no LwM2M server bootstraps before it
	// registers.
	Bootstrap            string
	BootstrapCredentials *Credentials
	// ProvisioningStore keeps what bootstrap provisioned, so that a
	// restart registers at once (NewFileProvisioningStore). Nil keeps
	// it in memory only: the device bootstraps at every start.
	ProvisioningStore ProvisioningStore
	// BootstrapTimeout abandons a bootstrap that has not finished this
	// long after its Bootstrap-Request, whether the server went quiet or
	// keeps sending; default EXCHANGE_LIFETIME (247 s). It is retried
	// with backoff between RetryMin and RetryMax.
	BootstrapTimeout time.Duration
	// BootstrapObjects lists the application objects that the bootstrap
	// server may write and delete, besides /0, /1 and /2. Their writes
	// are applied at Bootstrap-Finish.
	BootstrapObjects []uint16

	// QueueMode registers in queue mode (LwM2M 1.1 Core §6.5: the Q
	// parameter, or the binding UQ under 1.0) with every server: the
	// client closes its socket QueueWindow after its last exchange and
	// opens a new one when it has something to send or the lifetime
	// calls for an Update, which it always sends first.
	QueueMode bool
	// QueueWindow is how long a queue-mode client stays reachable after
	// its last exchange with a server; default MAX_TRANSMIT_WAIT of Tx
	// (93 s with RFC 7252's parameters), as the Core TS recommends.
	QueueWindow time.Duration
	// SendFormat is the content format of Send: content.SenMLCBOR
	// (default) or content.SenMLJSON.
	SendFormat content.Format
}

// LwM2M versions for Config.Version.
const (
	Version10 = "1.0"
	Version11 = "1.1"
)

// Client is an LwM2M client: it registers with each of its LwM2M servers,
// keeps the registrations alive, and serves the servers' requests on its
// objects, through the Access Control layer when there are several.
// Create it with New, add objects, then call Run.
type Client struct {
	cfg Config
	log *slog.Logger

	mu       sync.RWMutex
	objects  map[uint16]Object
	security *Static    // /0, replaced by applyProvisioning
	server   *Static    // /1
	acl      *Static    // /2
	sessions []*session // those Run serves now
	restart  chan struct{}
	bs       bootstrapState // bootstrap while running: Trigger, fall-back

	refused refusalLog
	off     offlineState // offline.go
}

type updateReq struct {
	full    bool // resend the object list
	disable bool // /1/0/4 executed
}

// New checks cfg and returns a client that serves Security (/0), Server
// (/1) and Access Control (/2) from it. Add the Device object and the
// application's own objects with AddObject before Run.
func New(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, fmt.Errorf("%w: no endpoint name", ErrConfig)
	}
	switch {
	case cfg.Provisioning != nil && cfg.Server != "":
		return nil, fmt.Errorf("%w: both Server and Provisioning set", ErrConfig)
	case cfg.Provisioning == nil && (cfg.Server != "" || !cfg.bootstraps()):
		u, err := url.Parse(cfg.Server)
		if err != nil {
			return nil, fmt.Errorf("%w: server URI: %w", ErrConfig, err)
		}
		if u.Scheme != "coap" && !(u.Scheme == "coaps" && (cfg.Transport != nil || cfg.TransportFor != nil)) {
			return nil, fmt.Errorf("%w: server URI scheme %q is not supported by this transport", ErrConfig, u.Scheme)
		}
	}
	if err := cfg.checkBootstrap(); err != nil {
		return nil, err
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = 86400 * time.Second
	}
	if cfg.ShortServerID == 0 {
		cfg.ShortServerID = 1
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 5 * time.Minute
	}
	if cfg.PreferredFormat == 0 {
		cfg.PreferredFormat = content.TLV
	}
	if cfg.MaxAssembledWrite <= 0 {
		cfg.MaxAssembledWrite = 64 << 10
	}
	if cfg.BlockTimeout <= 0 {
		cfg.BlockTimeout = exchangeLifetime
	}
	if cfg.MaxObservations <= 0 {
		cfg.MaxObservations = 64
	}
	switch cfg.Version {
	case "":
		cfg.Version = Version11
	case Version10:
		if !formatIn10(cfg.PreferredFormat) {
			return nil, fmt.Errorf("%w: preferred format %d is not defined in LwM2M 1.0", ErrConfig, cfg.PreferredFormat)
		}
	case Version11:
	default:
		return nil, fmt.Errorf("%w: LwM2M version %q (want %s or %s)", ErrConfig, cfg.Version, Version10, Version11)
	}
	cfg.Tx = cfg.Tx.Defaults()
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Client{
		cfg:     cfg,
		log:     log.With("endpoint", cfg.Endpoint),
		objects: make(map[uint16]Object),
		restart: make(chan struct{}, 1),
	}
	c.off.init()
	var p Provisioning
	switch {
	case cfg.Provisioning != nil:
		p = *cfg.Provisioning
	case cfg.Server != "":
		p = provisioningFromConfig(cfg)
	}
	if err := c.loadProvisioning(cfg.withBootstrapAccount(p)); err != nil {
		return nil, err
	}
	return c, nil
}

// Logger returns the client's logger, for modules installed on it.
func (c *Client) Logger() *slog.Logger { return c.log }

// AddObject adds o to the data model. Added while registered, it causes a
// Registration Update with the new object list.
func (c *Client) AddObject(o Object) error {
	c.mu.Lock()
	if _, ok := c.objects[o.ID()]; ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: /%d", ErrObjectExist, o.ID())
	}
	c.objects[o.ID()] = o
	c.mu.Unlock()
	if s, ok := o.(interface{ setNotifier(notifier) }); ok {
		s.setNotifier(c)
	}
	c.requestUpdate(updateReq{full: true})
	return nil
}

// RemoveObject removes object id from the data model.
func (c *Client) RemoveObject(id uint16) {
	c.mu.Lock()
	_, ok := c.objects[id]
	delete(c.objects, id)
	c.mu.Unlock()
	if ok {
		c.requestUpdate(updateReq{full: true})
	}
}

func (c *Client) object(id uint16) (Object, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.objects[id]
	return o, ok
}

func (c *Client) objectIDs() []uint16 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids := make([]uint16, 0, len(c.objects))
	for id := range c.objects {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Changed tells the client that the value at p changed, so observers of p
// (or of anything above or below it) are notified, respecting pmin and
// pmax, on every server that observes it. A change at an object path (one
// level) means instances were added or removed, and also triggers a
// Registration Update with every server.
func (c *Client) Changed(p model.Path) {
	switch {
	case p.Len() == 1:
		c.requestUpdate(updateReq{full: true})
	case p.Len() >= 3 && p.Object() == 1 && (p.Resource() == serverLifetime || p.Resource() == serverBinding):
		if s := c.sessionOf(p.Instance()); s != nil {
			s.requestUpdate(updateReq{}) // LwM2M 1.1 Core §6.2.2: tell the server at once
		}
	}
	for _, s := range c.currentSessions() {
		s.obs.changed(p)
	}
}

// UpdateRegistration sends a Registration Update to every server soon, as
// the Registration Update Trigger (/1/x/8) does for one.
func (c *Client) UpdateRegistration() { c.requestUpdate(updateReq{}) }

func (c *Client) requestUpdate(r updateReq) {
	for _, s := range c.currentSessions() {
		s.requestUpdate(r)
	}
}

// Registered reports whether the client holds a registration with at
// least one server now; Servers tells which.
func (c *Client) Registered() bool {
	for _, s := range c.Servers() {
		if s.Registered() {
			return true
		}
	}
	return false
}

// warnEvery rate-limits the warnings a peer can trigger at will.
const warnEvery = 30 * time.Second

// rateLog lets a warning through at most once per warnEvery and counts
// the ones it held back, so that a hostile or broken peer cannot flood
// the log.
type rateLog struct {
	mu      sync.Mutex
	last    time.Time
	skipped int
}

// allow reports whether to log now, and how many were held back since.
func (r *rateLog) allow() (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); r.last.IsZero() || now.Sub(r.last) >= warnEvery {
		n := r.skipped
		r.last, r.skipped = now, 0
		return true, n
	}
	r.skipped++
	return false, 0
}

// errNotInVersion10 is the reason logged for what versionRefusal refuses.
var errNotInVersion10 = errors.New("not part of LwM2M 1.0, the version this client registered with")

// versionRefusal refuses, under LwM2M 1.0, what only 1.1 defines: the
// SenML formats (4.06 asked for, 4.15 sent) and the composite operations
// FETCH and iPATCH (4.05). LwM2M 1.0 §6.4 knows text, opaque, TLV and
// OMA JSON (not implemented here).
func (c *Client) versionRefusal(r *pool.Message) codes.Code {
	if c.cfg.Version != Version10 {
		return 0
	}
	switch r.Code() {
	case codes.FETCH, codes.IPATCH:
		return codes.MethodNotAllowed
	}
	if a, err := r.Options().Accept(); err == nil && !formatIn10(content.Format(a)) {
		return codes.NotAcceptable
	}
	if f, err := r.Options().ContentFormat(); err == nil && !formatIn10(content.Format(f)) {
		return codes.UnsupportedMediaType
	}
	return 0
}

// formatIn10 reports whether LwM2M 1.0 defines content format f.
func formatIn10(f content.Format) bool {
	switch f {
	case content.SenMLJSON, content.SenMLCBOR, 60: // 60: CBOR, LwM2M 1.1
		return false
	}
	return true
}

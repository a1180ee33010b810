package campaign

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
)

// Config configures an Engine.
type Config struct {
	// Server runs the updates. Required.
	Server *server.Server
	// Store keeps campaigns and package records. Nil means the Server's
	// Store when it is a server.RecordStore (server.BoltStore is one),
	// else memory.
	Store server.RecordStore
	// Dir keeps the packages' files. Required; it is created (mode 0700)
	// if missing.
	Dir string
	// MaxPackageSize bounds an uploaded package; zero means
	// server.DefaultMaxPackageSize.
	MaxPackageSize int64
	// TrustedKey, when set, checks the signature of uploaded fwpkg
	// packages; without it a signed package is "unverified".
	TrustedKey ed25519.PublicKey
	// DeviceTimeout bounds one device's update, from its start to its
	// outcome: a device that has not come back with a result by then
	// (it never registered again after Update, for example) failed.
	// Zero means 30 minutes.
	DeviceTimeout time.Duration
	// PollInterval is how often the engine looks for devices that
	// registered (to update those that were offline at their turn) and
	// reads the state of updates it follows after a restart. Zero
	// means 2 seconds.
	PollInterval time.Duration
	// Logger receives the engine's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Engine runs update campaigns. Create it with New, then call Run.
type Engine struct {
	cfg   Config
	srv   *server.Server
	store server.RecordStore
	log   *slog.Logger

	mu       sync.Mutex
	packages map[string]Package
	camps    map[string]*camp
	ctx      context.Context // Run's; nil before it
	wg       sync.WaitGroup  // device goroutines

	kick chan struct{}

	subMu   sync.Mutex
	subs    map[int]func(string)
	nextSub int
	pending map[string]bool // campaigns changed since subscribers last heard
	notifyc chan struct{}
}

// camp is a campaign as the engine keeps it.
type camp struct {
	meta  Campaign // without Devices and Counts
	devs  []*Device
	byEP  map[string]*Device
	run   int                  // devices whose goroutine runs
	seen  map[string]time.Time // waiting devices: their registration when they last could not be reached
	check map[string]bool      // running before a restart: verify, do not update
}

const bucketCampaigns = "campaigns"

// New returns an engine with the campaigns and packages kept in the store.
func New(cfg Config) (*Engine, error) {
	if cfg.Server == nil || cfg.Dir == "" {
		return nil, fmt.Errorf("%w: Config needs Server and Dir", ErrInvalid)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("campaign: package directory: %w", err)
	}
	e := &Engine{
		cfg: cfg, srv: cfg.Server, store: cfg.Store, log: cfg.Logger,
		packages: map[string]Package{}, camps: map[string]*camp{},
		kick: make(chan struct{}, 1), subs: map[int]func(string){},
		pending: map[string]bool{}, notifyc: make(chan struct{}, 1),
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.store == nil {
		if rs, ok := cfg.Server.Store.(server.RecordStore); ok {
			e.store = rs
		} else {
			e.store = &server.MemoryStore{}
		}
	}
	if err := e.loadPackages(); err != nil {
		return nil, err
	}
	if err := e.loadCampaigns(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Engine) now() time.Time { return time.Now() }

func (e *Engine) maxPackageSize() int64 {
	if e.cfg.MaxPackageSize > 0 {
		return e.cfg.MaxPackageSize
	}
	return server.DefaultMaxPackageSize
}

func (e *Engine) deviceTimeout() time.Duration {
	if e.cfg.DeviceTimeout > 0 {
		return e.cfg.DeviceTimeout
	}
	return 30 * time.Minute
}

func (e *Engine) pollInterval() time.Duration {
	if e.cfg.PollInterval > 0 {
		return e.cfg.PollInterval
	}
	return 2 * time.Second
}

// loadCampaigns reads the campaigns back. A device that was running is
// verified, not updated again.
func (e *Engine) loadCampaigns() error {
	recs, err := e.store.Records(bucketCampaigns)
	if err != nil {
		return fmt.Errorf("campaign: loading campaigns: %w", err)
	}
	for k, v := range recs {
		if strings.Contains(k, "/") {
			continue
		}
		c := &camp{byEP: map[string]*Device{}, seen: map[string]time.Time{}, check: map[string]bool{}}
		if err := json.Unmarshal(v, &c.meta); err != nil || c.meta.ID != k {
			e.log.Warn("campaign record does not decode", "id", k, "err", err)
			continue
		}
		// What a newer or damaged record may lack, as Create would set it.
		if c.meta.Rollout.FailureThresholdPercent == nil {
			c.meta.Rollout.FailureThresholdPercent = new(float64(DefaultFailureThreshold))
		}
		if c.meta.Rollout.Concurrency <= 0 {
			c.meta.Rollout.Concurrency = DefaultConcurrency
		}
		for i := range c.meta.Waves {
			c.meta.Waves[i].Index = i
		}
		e.camps[k] = c
	}
	for k, v := range recs {
		id, ep, ok := strings.Cut(k, "/d/")
		c := e.camps[id]
		if !ok || c == nil {
			continue
		}
		d := &Device{}
		if err := json.Unmarshal(v, d); err != nil || d.Endpoint != ep || d.Wave < 0 || d.Wave >= len(c.meta.Waves) {
			e.log.Warn("campaign device record does not decode", "campaign", id, "ep", ep, "err", err)
			continue
		}
		if d.Status == DeviceRunning {
			c.check[ep] = true
			d.Phase = "check"
		}
		c.devs = append(c.devs, d)
		c.byEP[ep] = d
	}
	for _, c := range e.camps {
		sortDevices(c.devs)
	}
	return nil
}

func sortDevices(ds []*Device) {
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].Wave != ds[j].Wave {
			return ds[i].Wave < ds[j].Wave
		}
		return ds[i].Endpoint < ds[j].Endpoint
	})
}

func campKey(id string) string           { return id }
func devKey(id string, ep string) string { return id + "/d/" + ep }

func (c *camp) metaRecord() []byte {
	b, _ := json.Marshal(c.meta)
	return b
}

func devRecord(d *Device) []byte {
	b, _ := json.Marshal(d)
	return b
}

// Create starts a campaign over the registered endpoints that match
// spec's glob.
func (e *Engine) Create(spec Spec) (Campaign, error) {
	now := e.now().UTC()
	if err := spec.check(now); err != nil {
		return Campaign{}, err
	}
	e.mu.Lock()
	_, ok := e.packages[spec.Package]
	e.mu.Unlock()
	if !ok {
		return Campaign{}, fmt.Errorf("%w: %q", ErrNoPackage, spec.Package)
	}
	if spec.Method == MethodPullHTTP && e.srv.HTTPLocalAddr() == nil {
		return Campaign{}, fmt.Errorf("%w: %w", ErrInvalid, server.ErrNoHTTPListener)
	}
	var eps []string
	for _, r := range e.srv.Registrations() {
		if m, _ := path.Match(spec.Target.Endpoints, r.Endpoint); m {
			eps = append(eps, r.Endpoint)
		}
	}
	if len(eps) == 0 {
		return Campaign{}, fmt.Errorf("%w: no registered endpoint matches %q", ErrInvalid, spec.Target.Endpoints)
	}
	sort.Strings(eps)
	c := &camp{byEP: map[string]*Device{}, seen: map[string]time.Time{}, check: map[string]bool{}}
	c.meta = Campaign{
		ID: newID(), Name: spec.Name, Package: spec.Package, Target: spec.Target, Method: spec.Method,
		Rollout: spec.Rollout, State: StateRunning, Created: now, Deadline: spec.Deadline.UTC(),
	}
	c.meta.Waves = planWaves(len(eps), spec.Rollout)
	recs := map[string][]byte{}
	i := 0
	for _, w := range c.meta.Waves {
		for range w.Devices {
			d := &Device{Endpoint: eps[i], Wave: w.Index, Status: DevicePending, Phase: "", Result: -1, Updated: now}
			c.devs = append(c.devs, d)
			c.byEP[d.Endpoint] = d
			recs[devKey(c.meta.ID, d.Endpoint)] = devRecord(d)
			i++
		}
	}
	recs[campKey(c.meta.ID)] = c.metaRecord()
	if err := e.store.PutRecords(bucketCampaigns, recs); err != nil {
		return Campaign{}, fmt.Errorf("campaign: storing campaign: %w", err)
	}
	e.mu.Lock()
	e.camps[c.meta.ID] = c
	out := c.view()
	e.mu.Unlock()
	e.log.Info("campaign created", "id", c.meta.ID, "name", c.meta.Name, "package", c.meta.Package, "devices", len(eps), "waves", len(c.meta.Waves), "method", c.meta.Method)
	e.changed(c.meta.ID)
	e.wake()
	return out, nil
}

// planWaves splits n devices: the canary group, then waves.
func planWaves(n int, r Rollout) []Wave {
	var sizes []int
	if r.Canary > 0 {
		sizes = append(sizes, min(r.Canary, n))
	}
	size := r.WaveSize
	if size == 0 && r.WavePercent > 0 {
		size = max(int(float64(n)*r.WavePercent/100+0.5), 1)
	}
	for left := n - sum(sizes); left > 0; {
		s := left
		if size > 0 {
			s = min(size, left)
		}
		sizes = append(sizes, s)
		left -= s
	}
	waves := make([]Wave, len(sizes))
	for i, s := range sizes {
		waves[i] = Wave{Index: i, Devices: s, State: "pending", Canary: i == 0 && r.Canary > 0}
	}
	return waves
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

// view is the campaign as the API shows it; e.mu held.
func (c *camp) view() Campaign {
	out := c.meta
	out.Waves = append([]Wave(nil), c.meta.Waves...)
	out.Devices = make([]Device, len(c.devs))
	for i, d := range c.devs {
		out.Devices[i] = *d
		switch d.Status {
		case DeviceSucceeded:
			out.Counts.Succeeded++
			out.Waves[d.Wave].Done++
		case DeviceFailed:
			out.Counts.Failed++
			out.Waves[d.Wave].Failed++
		case DeviceExpired:
			out.Counts.Expired++
		case DevicePending, DeviceWaiting:
			out.Counts.Pending++
		case DeviceRunning:
			out.Counts.Running++
		case DeviceSkipped:
			out.Counts.Skipped++
		}
	}
	// A wave is "pending" before any of its devices started, "done" once
	// none is pending, waiting or running, else "running".
	started := make([]bool, len(out.Waves))
	open := make([]bool, len(out.Waves))
	for _, d := range c.devs {
		started[d.Wave] = started[d.Wave] || d.Status != DevicePending
		open[d.Wave] = open[d.Wave] || d.Status == DevicePending || d.Status == DeviceRunning || d.Status == DeviceWaiting
	}
	for i := range out.Waves {
		switch {
		case !started[i]:
			out.Waves[i].State = "pending"
		case open[i]:
			out.Waves[i].State = "running"
		default:
			out.Waves[i].State = "done"
		}
	}
	return out
}

// Campaigns returns every campaign, newest first.
func (e *Engine) Campaigns() []Campaign {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Campaign, 0, len(e.camps))
	for _, c := range e.camps {
		out = append(out, c.view())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Campaign returns one campaign.
func (e *Engine) Campaign(id string) (Campaign, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.camps[id]
	if c == nil {
		return Campaign{}, fmt.Errorf("%w: campaign %q", ErrNotFound, id)
	}
	return c.view(), nil
}

// Pause stops starting devices; the updates under way go on.
func (e *Engine) Pause(id, reason string) (Campaign, error) {
	return e.transition(id, func(c *camp) error {
		if c.meta.State != StateRunning {
			return fmt.Errorf("%w: campaign %s is %s", ErrState, id, c.meta.State)
		}
		if reason == "" {
			reason = "paused by the operator"
		}
		c.meta.State, c.meta.PauseReason = StatePaused, reason
		return nil
	}, nil)
}

// Resume runs a paused campaign again. The waves that crossed the failure
// threshold are accepted as they are: they do not pause it again.
func (e *Engine) Resume(id string) (Campaign, error) {
	return e.transition(id, func(c *camp) error {
		if c.meta.State != StatePaused {
			return fmt.Errorf("%w: campaign %s is %s", ErrState, id, c.meta.State)
		}
		v := c.view()
		for i, w := range v.Waves {
			if c.overThreshold(w) {
				c.meta.Waves[i].Accepted = true
			}
		}
		c.meta.State, c.meta.PauseReason = StateRunning, ""
		return nil
	}, nil)
}

// Abort ends a campaign: no device starts any more, and those that
// waited are skipped. The updates under way go on to their outcome.
func (e *Engine) Abort(id string) (Campaign, error) {
	recs := map[string][]byte{}
	return e.transition(id, func(c *camp) error {
		if c.meta.State != StateRunning && c.meta.State != StatePaused {
			return fmt.Errorf("%w: campaign %s is %s", ErrState, id, c.meta.State)
		}
		c.meta.State, c.meta.Finished = StateAborted, e.now().UTC()
		for _, d := range c.devs {
			if d.Status == DevicePending || d.Status == DeviceWaiting {
				d.Status, d.Error, d.Updated = DeviceSkipped, "campaign aborted", e.now().UTC()
				recs[devKey(id, d.Endpoint)] = devRecord(d)
			}
		}
		return nil
	}, recs)
}

// transition changes a campaign under the lock and stores it with recs.
func (e *Engine) transition(id string, f func(*camp) error, recs map[string][]byte) (Campaign, error) {
	e.mu.Lock()
	c := e.camps[id]
	if c == nil {
		e.mu.Unlock()
		return Campaign{}, fmt.Errorf("%w: campaign %q", ErrNotFound, id)
	}
	old := c.meta
	if err := f(c); err != nil {
		e.mu.Unlock()
		return Campaign{}, err
	}
	if recs == nil {
		recs = map[string][]byte{}
	}
	recs[campKey(id)] = c.metaRecord()
	if err := e.store.PutRecords(bucketCampaigns, recs); err != nil {
		c.meta = old
		e.mu.Unlock()
		return Campaign{}, fmt.Errorf("campaign: storing campaign: %w", err)
	}
	out := c.view()
	e.mu.Unlock()
	e.log.Info("campaign state", "id", id, "state", out.State, "reason", out.PauseReason)
	e.changed(id)
	e.wake()
	return out, nil
}

// overThreshold reports whether more than the threshold share of w's
// devices failed (the waves of an accepted pause excepted).
func (c *camp) overThreshold(w Wave) bool {
	if c.meta.Waves[w.Index].Accepted || w.Devices == 0 {
		return false
	}
	return float64(w.Failed)*100 > *c.meta.Rollout.FailureThresholdPercent*float64(w.Devices)
}

// Subscribe calls fn with a campaign's ID after any change of it, until
// ctx ends. fn runs on the engine's own goroutine, one call at a time, and
// must return quickly; changes that come while it runs are coalesced.
func (e *Engine) Subscribe(ctx context.Context, fn func(id string)) {
	e.subMu.Lock()
	id := e.nextSub
	e.nextSub++
	e.subs[id] = fn
	e.subMu.Unlock()
	context.AfterFunc(ctx, func() {
		e.subMu.Lock()
		delete(e.subs, id)
		e.subMu.Unlock()
	})
}

func (e *Engine) changed(id string) {
	e.subMu.Lock()
	e.pending[id] = true
	e.subMu.Unlock()
	select {
	case e.notifyc <- struct{}{}:
	default:
	}
}

// notifier tells subscribers of changes, until ctx ends.
func (e *Engine) notifier(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.notifyc:
		}
		e.subMu.Lock()
		ids := e.pending
		e.pending = map[string]bool{}
		fns := make([]func(string), 0, len(e.subs))
		for _, fn := range e.subs {
			fns = append(fns, fn)
		}
		e.subMu.Unlock()
		for id := range ids {
			for _, fn := range fns {
				fn(id)
			}
		}
	}
}

func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

package lwm2m

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// bootstraps reports whether cfg may configure the client through
// bootstrap or a store rather than Server or Provisioning alone.
func (cfg Config) bootstraps() bool {
	return cfg.Bootstrap != "" || cfg.ProvisioningStore != nil
}

// checkBootstrap checks the bootstrap fields of cfg.
func (cfg Config) checkBootstrap() error {
	if cfg.Server == "" && cfg.Provisioning == nil && !cfg.bootstraps() {
		return fmt.Errorf("%w: no server: set Server, Provisioning, Bootstrap or ProvisioningStore", ErrConfig)
	}
	if cfg.BootstrapTimeout < 0 {
		return fmt.Errorf("%w: negative BootstrapTimeout", ErrConfig)
	}
	if cfg.Bootstrap != "" {
		u, err := url.Parse(cfg.Bootstrap)
		switch {
		case err != nil:
			return fmt.Errorf("%w: bootstrap server URI: %w", ErrConfig, err)
		case u.Scheme == "coap":
		case u.Scheme == "coaps" && cfg.BootstrapCredentials != nil && cfg.TransportFor != nil:
		case u.Scheme == "coaps":
			return fmt.Errorf("%w: a coaps:// bootstrap server needs BootstrapCredentials and TransportFor", ErrConfig)
		default:
			return fmt.Errorf("%w: bootstrap server URI scheme %q is not supported", ErrConfig, u.Scheme)
		}
		if cfg.Provisioning != nil {
			if _, ok := bootstrapAccount(treeOf(cfg.Provisioning.Records)); ok {
				return fmt.Errorf("%w: Bootstrap and a bootstrap account in Provisioning", ErrConfig)
			}
		}
	}
	if cfg.Provisioning != nil {
		if err := cfg.Provisioning.check(false); err != nil {
			return fmt.Errorf("%w: Provisioning: %w", ErrConfig, err)
		}
	}
	return nil
}

// withBootstrapAccount adds the account of Config.Bootstrap to p, at the
// lowest free Security instance.
func (cfg Config) withBootstrapAccount(p Provisioning) Provisioning {
	if cfg.Bootstrap == "" {
		return p
	}
	t := treeOf(p.Records)
	inst := uint16(0)
	for t.has(0, inst) {
		inst++
	}
	cr := Credentials{Mode: SecurityNoSec}
	if cfg.BootstrapCredentials != nil {
		cr = *cfg.BootstrapCredentials
	}
	recs := append([]model.Record(nil), p.Records...)
	add := func(res uint16, v model.Value) {
		recs = append(recs, model.Record{Path: model.NewPath(0, inst, res), Value: v})
	}
	add(secServerURI, model.String(cfg.Bootstrap))
	add(secBootstrap, model.Bool(true))
	add(secMode, model.Int(int64(cr.Mode)))
	add(secPublicKeyID, model.Opaque(cr.PublicKeyID))
	add(secServerKey, model.Opaque(cr.ServerKey))
	add(secSecretKey, model.Opaque(cr.SecretKey))
	sortRecords(recs)
	return Provisioning{Records: recs}
}

// storedProvisioning returns what the store holds, checked.
func (c *Client) storedProvisioning(ctx context.Context) (Provisioning, error) {
	if c.cfg.ProvisioningStore == nil {
		return Provisioning{}, ErrNotProvisioned
	}
	p, err := c.cfg.ProvisioningStore.Load(ctx)
	if err != nil {
		return Provisioning{}, err
	}
	if err := p.Validate(); err != nil {
		return Provisioning{}, fmt.Errorf("%w: the stored configuration: %w", ErrCorruptProvisioning, err)
	}
	return p, nil
}

// provision settles the configuration before the first registration: the
// stored one if there is one (a device bootstraps once in its life), else
// the one New loaded if it names an LwM2M server, else what bootstrap
// provides. A stored configuration that cannot be read is reported and,
// if a bootstrap server is known, replaced by bootstrapping again.
func (c *Client) provision(ctx context.Context) error {
	p, err := c.storedProvisioning(ctx)
	switch {
	case err == nil:
		c.log.Info("starting from the provisioned configuration", "servers", len(treeOf(p.Records).instances(1)))
		return c.loadProvisioning(p)
	case errors.Is(err, ErrNotProvisioned):
	default:
		if _, ok := bootstrapAccount(treeOf(c.Provisioning().Records)); !ok {
			return err
		}
		c.log.Error("the provisioned configuration is unusable: bootstrapping again", "err", err)
	}
	cur := c.Provisioning()
	t := treeOf(cur.Records)
	if len(t.instances(1)) > 0 {
		return nil // Config.Server or Config.Provisioning names a server
	}
	if _, ok := bootstrapAccount(t); !ok {
		return fmt.Errorf("%w: no LwM2M server and no bootstrap server", ErrConfig)
	}
	p, err = c.bootstrapLoop(ctx, cur, 0)
	if err != nil {
		return err
	}
	return c.loadProvisioning(p)
}

// bootstrapLoop bootstraps until it succeeds, ctx ends, or (attempts > 0)
// after that many failures, after the Client Hold Off Time of the
// bootstrap account (/0/x/11), with jittered exponential backoff between
// attempts.
func (c *Client) bootstrapLoop(ctx context.Context, from Provisioning, attempts int) (Provisioning, error) {
	t := treeOf(from.Records)
	bs, ok := bootstrapAccount(t)
	if !ok {
		return Provisioning{}, ErrNoBootstrapServer
	}
	if hold, ok := t.value(0, bs, bsSecHoldOff); ok && hold.Int > 0 {
		d := time.Duration(hold.Int) * time.Second
		c.log.Info("holding off before bootstrap", "for", d)
		select {
		case <-ctx.Done():
			return Provisioning{}, ctx.Err()
		case <-time.After(d):
		}
	}
	backoff := c.cfg.RetryMin
	for n := 1; ; n++ {
		p, err := c.bootstrapOnce(ctx, from, c.commitBootstrap)
		if err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			return Provisioning{}, ctx.Err()
		}
		if attempts > 0 && n >= attempts {
			return Provisioning{}, err
		}
		wait := jitter(backoff)
		c.log.Warn("bootstrap failed, retrying", "err", err, "in", wait.Round(time.Millisecond), "retry_at", retryAt(wait))
		select {
		case <-ctx.Done():
			return Provisioning{}, ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.RetryMax)
	}
}

// commitBootstrap makes what Bootstrap-Finish accepted durable: the
// writes of application objects, then the configuration, saved
// atomically.
func (c *Client) commitBootstrap(ctx context.Context, p Provisioning, ops []bsOp) error {
	if err := c.applyBootstrapOps(ctx, ops); err != nil {
		return err
	}
	if c.cfg.ProvisioningStore == nil {
		return nil
	}
	return c.cfg.ProvisioningStore.Save(ctx, p)
}

// Bootstrapping again while running (LwM2M 1.1 Core §6.1, §E.2).

// rebootstrapAttempts bounds a bootstrap started while the client runs:
// after that many failures the sessions go on with the configuration they
// have, which is still stored.
const rebootstrapAttempts = 3

// fallbackAttempts is how many registrations in a row must fail with
// every server before the client falls back to bootstrap, when the
// Server instance does not say (/1/x/17 Communication Retry Count, whose
// default is 5, times /1/x/20 Sequence Retry Count, default 1).
const fallbackAttempts = 5

// bootstrapState tracks registration failures for the fall-back to
// bootstrap, and asks for a bootstrap (Trigger or fall-back).
type bootstrapState struct {
	mu       sync.Mutex
	failures map[uint16]int // consecutive failed registrations by short server ID
	req      chan string    // why a bootstrap is wanted
}

// requests returns the channel of bootstrap requests.
func (b *bootstrapState) requests() chan string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.req == nil {
		b.req = make(chan string, 1)
	}
	return b.req
}

func (b *bootstrapState) request(why string) {
	select {
	case b.requests() <- why:
	default: // one is pending already
	}
}

// registrationFailed counts a failed registration (or connection) of s
// and asks for a bootstrap when every server has failed its attempts and
// each one's Bootstrap on Registration Failure (/1/x/16, default true)
// allows it.
func (c *Client) registrationFailed(s *session) {
	b := &c.bs
	b.mu.Lock()
	if b.failures == nil {
		b.failures = map[uint16]int{}
	}
	b.failures[s.ssid]++
	failures := maps.Clone(b.failures)
	b.mu.Unlock()
	sessions := c.currentSessions()
	if len(sessions) == 0 {
		return
	}
	for _, x := range sessions {
		if failures[x.ssid] < x.retryCount() {
			return
		}
		if v, ok := x.serverValue(bsServerOnRegFailure); ok && !v.Bool {
			return
		}
	}
	if _, ok := bootstrapAccount(treeOf(c.Provisioning().Records)); !ok {
		return
	}
	c.bs.request("registration failed with every server")
}

// registrationSucceeded resets the count of s.
func (c *Client) registrationSucceeded(s *session) {
	c.bs.mu.Lock()
	delete(c.bs.failures, s.ssid)
	c.bs.mu.Unlock()
}

// retryCount is how many registrations in a row must fail before this
// server counts as failed: /1/x/17 times /1/x/20 when set.
func (s *session) retryCount() int {
	n, m := int64(fallbackAttempts), int64(1)
	if v, ok := s.serverValue(17); ok && v.Uint > 0 {
		n = int64(min(v.Uint, 1000))
	}
	if v, ok := s.serverValue(20); ok && v.Uint > 0 {
		m = int64(min(v.Uint, 1000))
	}
	return int(n * m)
}

// watchBootstrap serves bootstrap requests while the client runs, until
// ctx ends: the Bootstrap-Request Trigger and the fall-back. The sessions
// go on while it bootstraps; a new configuration replaces them
// (applyProvisioning). The function it returns waits for its goroutine.
func (c *Client) watchBootstrap(ctx context.Context) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.bootstrapWatch(ctx)
	}()
	return func() { <-done }
}

func (c *Client) bootstrapWatch(ctx context.Context) {
	reqs := c.bs.requests()
	for {
		select {
		case <-ctx.Done():
			return
		case why := <-reqs:
			c.log.Info("bootstrapping again", "why", why)
			p, err := c.bootstrapLoop(ctx, c.Provisioning(), rebootstrapAttempts)
			c.bs.mu.Lock()
			clear(c.bs.failures) // a failed fall-back waits for a full sequence of failures again
			c.bs.mu.Unlock()
			select {
			case <-reqs: // asked for meanwhile: this bootstrap was the answer
			default:
			}
			if err != nil {
				if ctx.Err() == nil {
					c.log.Error("bootstrap failed; keeping the current configuration", "err", err)
				}
				continue
			}
			if err := c.applyProvisioning(ctx, p); err != nil {
				c.log.Error("cannot apply the bootstrapped configuration", "err", err)
			}
		}
	}
}

// bootstrapTrigger serves Bootstrap-Request Trigger (/1/x/9).
func (c *Client) bootstrapTrigger(context.Context, uint16, string) error {
	if _, ok := bootstrapAccount(treeOf(c.Provisioning().Records)); !ok {
		return fmt.Errorf("%w: no bootstrap server configured", ErrMethodNotAllowed)
	}
	c.bs.request("Bootstrap-Request Trigger executed")
	return nil
}

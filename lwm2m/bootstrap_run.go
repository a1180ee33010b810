package lwm2m

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// bootstraps reports whether cfg configures the client through
// bootstrap, a factory configuration or a store rather than Server alone.
func (cfg Config) bootstraps() bool {
	return cfg.Bootstrap != "" || cfg.Provisioning != nil || cfg.ProvisioningStore != nil
}

// checkBootstrap checks the bootstrap fields of cfg.
func (cfg Config) checkBootstrap() error {
	if cfg.Server == "" && cfg.Bootstrap == "" && cfg.Provisioning == nil && cfg.ProvisioningStore == nil {
		return fmt.Errorf("%w: no server: set Server, Bootstrap, Provisioning or ProvisioningStore", ErrConfig)
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
	}
	if cfg.Provisioning != nil {
		if err := cfg.Provisioning.check(false); err != nil {
			return fmt.Errorf("%w: factory configuration: %w", ErrConfig, err)
		}
	}
	return nil
}

// initialProvisioning is the configuration of a device that was never
// provisioned: the factory configuration, or the one that Config.Server
// and Config.Bootstrap describe (the server at /0/0 and /1/0, the
// bootstrap server's account at the next Security instance).
func (c *Client) initialProvisioning() Provisioning {
	if c.cfg.Provisioning != nil {
		return Provisioning{Records: append([]model.Record(nil), c.cfg.Provisioning.Records...)}
	}
	var recs []model.Record
	add := func(p model.Path, v model.Value) { recs = append(recs, model.Record{Path: p, Value: v}) }
	bsInst := uint16(0)
	if c.cfg.Server != "" {
		cr := c.Credentials()
		add(model.NewPath(0, 0, secServerURI), model.String(c.cfg.Server))
		add(model.NewPath(0, 0, secBootstrap), model.Bool(false))
		add(model.NewPath(0, 0, secMode), model.Int(int64(cr.Mode)))
		add(model.NewPath(0, 0, secPublicKeyID), model.Opaque(cr.PublicKeyID))
		add(model.NewPath(0, 0, secServerKey), model.Opaque(cr.ServerKey))
		add(model.NewPath(0, 0, secSecretKey), model.Opaque(cr.SecretKey))
		add(model.NewPath(0, 0, secShortID), model.Int(int64(c.cfg.ShortServerID)))
		add(model.NewPath(1, 0, serverShortID), model.Int(int64(c.cfg.ShortServerID)))
		add(model.NewPath(1, 0, serverLifetime), model.Int(int64(c.cfg.Lifetime/time.Second)))
		add(model.NewPath(1, 0, serverStoring), model.Bool(false))
		add(model.NewPath(1, 0, serverBinding), model.String("U"))
		bsInst = 1
	}
	if c.cfg.Bootstrap != "" {
		cr := Credentials{Mode: SecurityNoSec}
		if c.cfg.BootstrapCredentials != nil {
			cr = *c.cfg.BootstrapCredentials
		}
		add(model.NewPath(0, bsInst, secServerURI), model.String(c.cfg.Bootstrap))
		add(model.NewPath(0, bsInst, secBootstrap), model.Bool(true))
		add(model.NewPath(0, bsInst, secMode), model.Int(int64(cr.Mode)))
		add(model.NewPath(0, bsInst, secPublicKeyID), model.Opaque(cr.PublicKeyID))
		add(model.NewPath(0, bsInst, secServerKey), model.Opaque(cr.ServerKey))
		add(model.NewPath(0, bsInst, secSecretKey), model.Opaque(cr.SecretKey))
	}
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
// the initial one if it names an LwM2M server, else what bootstrap
// provides. A stored configuration that cannot be read is reported and,
// if a bootstrap server is known, replaced by bootstrapping again.
func (c *Client) provision(ctx context.Context) error {
	if !c.cfg.bootstraps() {
		return nil
	}
	p, err := c.storedProvisioning(ctx)
	switch {
	case err == nil:
		c.log.Info("starting from the provisioned configuration", "servers", len(treeOf(p.Records).instances(1)))
		return c.applyProvisioningInterim(p)
	case errors.Is(err, ErrNotProvisioned):
	default:
		if _, ok := bootstrapAccount(treeOf(c.initialProvisioning().Records)); !ok {
			return err
		}
		c.log.Error("the provisioned configuration is unusable: bootstrapping again", "err", err)
	}
	init := c.initialProvisioning()
	if len(treeOf(init.Records).instances(1)) > 0 {
		if err := init.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		return c.applyProvisioningInterim(init)
	}
	p, err = c.bootstrapLoop(ctx, init)
	if err != nil {
		return err
	}
	return c.applyProvisioningInterim(p)
}

// bootstrapLoop bootstraps until it succeeds or ctx ends, after the Client
// Hold Off Time of the bootstrap account (/0/x/11), with jittered
// exponential backoff between attempts.
func (c *Client) bootstrapLoop(ctx context.Context, from Provisioning) (Provisioning, error) {
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
	for {
		p, err := c.bootstrapOnce(ctx, from, c.commitBootstrap)
		if err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			return Provisioning{}, ctx.Err()
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

// applyProvisioningInterim points the single-server client at the first
// Server instance of p. TEMPORARY: replaced by applyProvisioning (one
// session per Server instance) when sessions merges.
func (c *Client) applyProvisioningInterim(p Provisioning) error {
	t := treeOf(p.Records)
	insts := t.instances(1)
	if len(insts) == 0 {
		return fmt.Errorf("%w: no LwM2M server configured", ErrConfig)
	}
	ssid, _ := t.value(1, insts[0], serverShortID)
	var sec uint16
	found := false
	for _, i := range t.instances(0) {
		if v, ok := t.value(0, i, secShortID); ok && v.Int == ssid.Int {
			if bs, _ := t.value(0, i, secBootstrap); !bs.Bool {
				sec, found = i, true
				break
			}
		}
	}
	if !found {
		return fmt.Errorf("%w: no Security instance for Short Server ID %d", ErrConfig, ssid.Int)
	}
	uri, _ := t.value(0, sec, secServerURI)
	u, err := url.Parse(uri.Str)
	if err != nil {
		return fmt.Errorf("%w: server URI: %w", ErrConfig, err)
	}
	cr := credentialsOf(t, sec)
	c.cfg.Transport = nil
	if u.Scheme != "coap" {
		if c.cfg.TransportFor == nil {
			return fmt.Errorf("%w: %s: no transport for scheme %q", ErrConfig, uri.Str, u.Scheme)
		}
		if c.cfg.Transport, err = c.cfg.TransportFor(uri.Str, cr); err != nil {
			return err
		}
	}
	c.cfg.Server, c.host = uri.Str, coapuri.HostPort(u)
	c.cfg.ShortServerID = uint16(ssid.Int)
	c.security.Set(0, secServerURI, uri)
	c.security.Set(0, secShortID, ssid)
	c.SetCredentials(cr)
	for _, res := range []uint16{serverShortID, serverLifetime, serverPmin, serverPmax, serverDisableTO, serverStoring, serverBinding} {
		if v, ok := t.value(1, insts[0], res); ok {
			c.server.Set(0, res, v)
		}
	}
	return nil
}

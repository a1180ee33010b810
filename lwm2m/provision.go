package lwm2m

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Provisioning is the configuration of the client's server accounts: the
// instances of Security (/0), Server (/1) and Access Control (/2),
// resource by resource. Records are sorted by path; multiple resources
// (the ACL) have one record per resource instance.
type Provisioning struct{ Records []model.Record }

// ProvisioningStore keeps a Provisioning across restarts. Save is atomic:
// after a crash, Load returns the old configuration or the new one.
type ProvisioningStore interface {
	Load(ctx context.Context) (Provisioning, error) // ErrNotProvisioned if nothing saved
	Save(ctx context.Context, p Provisioning) error
}

// ErrNotProvisioned is what a ProvisioningStore's Load returns when nothing
// has been saved.
var ErrNotProvisioned = errors.New("lwm2m: not provisioned")

// provisioningFromConfig is the one account of Config.Server: /0/0 and
// /1/0 with the values of Config, and no Access Control instance (one
// server has every right, LwM2M 1.1 Core §7).
func provisioningFromConfig(cfg Config) Provisioning {
	var p Provisioning
	add := func(obj, res uint16, v model.Value) {
		p.Records = append(p.Records, model.Record{Path: model.NewPath(obj, 0, res), Value: v})
	}
	add(0, secServerURI, model.String(cfg.Server))
	add(0, secBootstrap, model.Bool(false))
	mode := SecurityNoSec
	if cr := cfg.Credentials; cr != nil {
		mode = cr.Mode
	}
	add(0, secMode, model.Int(int64(mode)))
	if cr := cfg.Credentials; cr != nil {
		add(0, secPublicKeyID, model.Opaque(cr.PublicKeyID))
		add(0, secServerKey, model.Opaque(cr.ServerKey))
		add(0, secSecretKey, model.Opaque(cr.SecretKey))
	}
	add(0, secShortID, model.Int(int64(cfg.ShortServerID)))
	add(1, serverShortID, model.Int(int64(cfg.ShortServerID)))
	add(1, serverLifetime, model.Int(int64(cfg.Lifetime/time.Second)))
	add(1, serverPmin, model.Int(int64(cfg.DefaultPmin/time.Second)))
	add(1, serverPmax, model.Int(int64(cfg.DefaultPmax/time.Second)))
	add(1, serverDisableTO, model.Int(86400))
	// Kept through offline periods (offline.go), as a device that
	// switches its radio off expects; a server may write false.
	add(1, serverStoring, model.Bool(true))
	add(1, serverBinding, model.String(configBinding(cfg)))
	if cfg.Version != Version10 {
		// Mute Send (LwM2M 1.1), present so that a server can write it.
		add(1, serverMuteSend, model.Bool(false))
	}
	sortRecords(p.Records)
	return p
}

// configBinding is the Binding (/1/x/7) of the account Config.Server
// describes. LwM2M 1.0 has no Q parameter: a 1.0 server learns of queue
// mode from the binding UQ (LwM2M 1.0 §5.3.1.1), in the Register and in
// /1/x/7 alike, so the two must agree.
func configBinding(cfg Config) string {
	if cfg.QueueMode && cfg.Version == Version10 {
		return "UQ"
	}
	return "U"
}

func sortRecords(recs []model.Record) {
	slices.SortStableFunc(recs, func(a, b model.Record) int { return comparePaths(a.Path, b.Path) })
}

// comparePaths orders paths level by level, a parent before its children.
func comparePaths(a, b model.Path) int {
	for i := 0; i < min(a.Len(), b.Len()); i++ {
		if d := int(a.ID(i)) - int(b.ID(i)); d != 0 {
			return d
		}
	}
	return a.Len() - b.Len()
}

// Provisioning returns a snapshot of the server accounts: every value of
// Security (/0), Server (/1) and Access Control (/2), keys included. Keep
// it out of logs.
func (c *Client) Provisioning() Provisioning {
	var p Provisioning
	for _, o := range []*Static{c.securityObject(), c.serverObject(), c.aclObject()} {
		p.Records = append(p.Records, o.records()...)
	}
	sortRecords(p.Records)
	return p
}

// applyProvisioning replaces Security, Server and Access Control with p
// and restarts the sessions: Run de-registers from the old servers and
// registers with the new ones. It is safe to call while Run runs, and
// before. ctx is unused for now; bootstrap passes its own.
func (c *Client) applyProvisioning(_ context.Context, p Provisioning) error {
	if err := c.loadProvisioning(p); err != nil {
		return err
	}
	select {
	case c.restart <- struct{}{}:
	default: // a restart is pending already; it will see p
	}
	return nil
}

// loadProvisioning builds /0, /1 and /2 from p and puts them in the data
// model in place of the old ones. A record of another object, or of a
// resource these objects do not know, is an error and changes nothing.
func (c *Client) loadProvisioning(p Provisioning) error {
	sec := newSecurityObject(c.cfg.Version)
	srv := newServerObject(c, c.cfg.Version)
	acl := newACLObject()
	byObj := map[uint16]*Static{0: sec, 1: srv, 2: acl}
	for _, r := range p.Records {
		if r.Path.Len() < 3 {
			return fmt.Errorf("%w: provisioning record %v is not a resource", ErrConfig, r.Path)
		}
		o, ok := byObj[r.Path.Object()]
		if !ok {
			return fmt.Errorf("%w: provisioning record %v is not in /0, /1 or /2", ErrConfig, r.Path)
		}
		if err := o.load(r); err != nil {
			return fmt.Errorf("%w: provisioning record %v: %w", ErrConfig, r.Path, err)
		}
	}
	for _, y := range acl.Instances() {
		if _, err := acl.Read(context.Background(), model.NewPath(2, y, aclACL)); err != nil {
			// An empty ACL is there to be written (§7.3.1.2.2).
			acl.SetMulti(y, aclACL, nil)
		}
	}
	c.mu.Lock()
	c.security, c.server, c.acl = sec, srv, acl
	c.objects[0], c.objects[1], c.objects[2] = sec, srv, acl
	c.mu.Unlock()
	for _, o := range []*Static{sec, srv, acl} {
		o.setNotifier(c)
	}
	return nil
}

func (c *Client) securityObject() *Static {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.security
}

func (c *Client) serverObject() *Static {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.server
}

func (c *Client) aclObject() *Static {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.acl
}

package lwm2m

import (
	"context"
	"strconv"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Security (/0) and Server (/1) describe the client's one server account.
// They live in the core, not in package objects, because registration
// reads and reacts to them (lifetime, binding, Disable, Update Trigger).

// Security object resources (LwM2M 1.1 Core, Appendix E.1).
const (
	secServerURI    = 0
	secBootstrap    = 1
	secMode         = 2
	secPublicKeyID  = 3
	secServerKey    = 4
	secSecretKey    = 5
	secShortID      = 10
	serverShortID   = 0
	serverLifetime  = 1
	serverPmin      = 2
	serverPmax      = 3
	serverDisable   = 4
	serverDisableTO = 5
	serverStoring   = 6
	serverBinding   = 7
	serverTrigger   = 8
)

// SecurityMode is the Security Mode of the server account, resource
// /0/x/2 (LwM2M 1.1 Core, Appendix E.1).
type SecurityMode int64

// Security Modes of /0/x/2.
const (
	SecurityPSK         SecurityMode = 0 // pre-shared key
	SecurityRPK         SecurityMode = 1 // raw public key (RFC 7250)
	SecurityCertificate SecurityMode = 2 // X.509 certificates
	SecurityNoSec       SecurityMode = 3 // no security: plain CoAP
)

// String returns the mode's name as the LwM2M specification spells it.
func (m SecurityMode) String() string {
	switch m {
	case SecurityPSK:
		return "PSK"
	case SecurityRPK:
		return "RPK"
	case SecurityCertificate:
		return "Certificate"
	case SecurityNoSec:
		return "NoSec"
	}
	return "SecurityMode(" + strconv.FormatInt(int64(m), 10) + ")"
}

// Credentials describe the DTLS credentials of the server account, as
// stored in the Security object. The secure transport fills them in.
type Credentials struct {
	Mode        SecurityMode
	PublicKeyID []byte // PSK identity, or the client certificate (DER)
	ServerKey   []byte // the server's certificate or public key (DER)
	SecretKey   []byte // PSK, or the client's private key (DER)
}

func newSecurityObject(cfg Config) *Static {
	o := NewStatic(0, cfg.Version, // no 1.1-only resources: the same in both
		Resource{ID: secServerURI, Type: model.MustCoreType(0, secServerURI), Ops: OpRW},
		Resource{ID: secBootstrap, Type: model.MustCoreType(0, secBootstrap), Ops: OpRW},
		Resource{ID: secMode, Type: model.MustCoreType(0, secMode), Ops: OpRW},
		Resource{ID: secPublicKeyID, Type: model.MustCoreType(0, secPublicKeyID), Ops: OpRW},
		Resource{ID: secServerKey, Type: model.MustCoreType(0, secServerKey), Ops: OpRW},
		Resource{ID: secSecretKey, Type: model.MustCoreType(0, secSecretKey), Ops: OpWrite},
		Resource{ID: secShortID, Type: model.MustCoreType(0, secShortID), Ops: OpRW},
	)
	o.Set(0, secServerURI, model.String(cfg.Server))
	o.Set(0, secBootstrap, model.Bool(false))
	o.Set(0, secMode, model.Int(int64(SecurityNoSec)))
	o.Set(0, secShortID, model.Int(int64(cfg.ShortServerID)))
	return o
}

// SetCredentials records the server account's credentials in the Security
// object (/0/0/2..5).
func (c *Client) SetCredentials(cr Credentials) {
	c.security.Set(0, secMode, model.Int(int64(cr.Mode)))
	c.security.Set(0, secPublicKeyID, model.Opaque(cr.PublicKeyID))
	c.security.Set(0, secServerKey, model.Opaque(cr.ServerKey))
	c.security.Set(0, secSecretKey, model.Opaque(cr.SecretKey))
}

// Credentials returns what the Security object holds for the server account.
func (c *Client) Credentials() Credentials {
	get := func(res uint16) model.Value { v, _ := c.security.Get(0, res); return v }
	return Credentials{
		Mode:        SecurityMode(get(secMode).Int),
		PublicKeyID: get(secPublicKeyID).Bytes,
		ServerKey:   get(secServerKey).Bytes,
		SecretKey:   get(secSecretKey).Bytes,
	}
}

// ServerURI is the LwM2M server's URI from the Security object.
func (c *Client) ServerURI() string { return c.cfg.Server }

func newServerObject(c *Client) *Static {
	cfg := c.cfg
	o := NewStatic(1, cfg.Version, // no 1.1-only resources: the same in both
		Resource{ID: serverShortID, Type: model.MustCoreType(1, serverShortID), Ops: OpRead},
		Resource{ID: serverLifetime, Type: model.MustCoreType(1, serverLifetime), Ops: OpRW},
		Resource{ID: serverPmin, Type: model.MustCoreType(1, serverPmin), Ops: OpRW},
		Resource{ID: serverPmax, Type: model.MustCoreType(1, serverPmax), Ops: OpRW},
		Resource{ID: serverDisable, Type: model.MustCoreType(1, serverDisable), Ops: OpExecute},
		Resource{ID: serverDisableTO, Type: model.MustCoreType(1, serverDisableTO), Ops: OpRW},
		Resource{ID: serverStoring, Type: model.MustCoreType(1, serverStoring), Ops: OpRW},
		Resource{ID: serverBinding, Type: model.MustCoreType(1, serverBinding), Ops: OpRW},
		Resource{ID: serverTrigger, Type: model.MustCoreType(1, serverTrigger), Ops: OpExecute},
	)
	o.Set(0, serverShortID, model.Int(int64(cfg.ShortServerID)))
	o.Set(0, serverLifetime, model.Int(int64(cfg.Lifetime/time.Second)))
	o.Set(0, serverPmin, model.Int(int64(cfg.DefaultPmin/time.Second)))
	o.Set(0, serverPmax, model.Int(int64(cfg.DefaultPmax/time.Second)))
	o.Set(0, serverDisableTO, model.Int(86400))
	o.Set(0, serverStoring, model.Bool(false))
	o.Set(0, serverBinding, model.String("U"))
	o.OnWrite(func(_ context.Context, p model.Path, recs []model.Record) error {
		if len(recs) != 1 {
			return ErrBadRequest
		}
		v := recs[0].Value
		switch p.Resource() {
		case serverLifetime:
			if v.Int <= 0 {
				return ErrBadRequest
			}
		case serverPmin, serverPmax, serverDisableTO:
			if v.Int < 0 {
				return ErrBadRequest
			}
		case serverBinding:
			if v.Str != "U" {
				return ErrBadRequest // this client speaks UDP only
			}
		}
		return nil // Client.Changed sends the Update once the value is stored
	})
	o.OnExecute(serverDisable, func(context.Context, uint16, string) error {
		c.requestUpdate(updateReq{disable: true})
		return nil
	})
	o.OnExecute(serverTrigger, func(context.Context, uint16, string) error {
		c.requestUpdate(updateReq{})
		return nil
	})
	return o
}

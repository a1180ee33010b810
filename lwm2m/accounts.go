package lwm2m

import (
	"context"
	"fmt"
	"strconv"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Security (/0) and Server (/1) describe the client's server accounts, one
// per pair of instances with the same Short Server ID. They live in the
// core, not in package objects, because registration reads and reacts to
// them (lifetime, binding, Disable, Update Trigger).

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

// newSecurityObject declares every Security resource of the 1.2 object
// that carries a value (the key resources are write-only: no server reads
// them, LwM2M 1.1 Core §E.1).
func newSecurityObject(version string) *Static {
	var defs []Resource
	for res := uint16(0); res <= 30; res++ {
		t, ok := model.CoreTypes(model.NewPath(0, 0, res))
		if !ok || t == model.TypeNone {
			continue
		}
		ops := OpRW
		if res == secSecretKey {
			ops = OpWrite
		}
		defs = append(defs, Resource{ID: res, Type: t, Ops: ops})
	}
	return NewStatic(0, version, defs...) // no 1.1-only resources: the same in both
}

// SetCredentials records the credentials of the first server account
// (Security instance /0/0: the account of Config.Server) in /0/0/2..5.
func (c *Client) SetCredentials(cr Credentials) {
	sec := c.securityObject()
	sec.Set(0, secMode, model.Int(int64(cr.Mode)))
	sec.Set(0, secPublicKeyID, model.Opaque(cr.PublicKeyID))
	sec.Set(0, secServerKey, model.Opaque(cr.ServerKey))
	sec.Set(0, secSecretKey, model.Opaque(cr.SecretKey))
}

// Credentials returns what the Security object holds for the first server
// account (/0/0).
func (c *Client) Credentials() Credentials { return c.credentialsOf(0) }

func (c *Client) credentialsOf(inst uint16) Credentials {
	sec := c.securityObject()
	get := func(res uint16) model.Value { v, _ := sec.Get(inst, res); return v }
	return Credentials{
		Mode:        SecurityMode(get(secMode).Int),
		PublicKeyID: get(secPublicKeyID).Bytes,
		ServerKey:   get(secServerKey).Bytes,
		SecretKey:   get(secSecretKey).Bytes,
	}
}

// ServerURI is the LwM2M server's URI: Config.Server, or else the URI of
// the first LwM2M server account in the Security object.
func (c *Client) ServerURI() string {
	if c.cfg.Server != "" {
		return c.cfg.Server
	}
	sec := c.securityObject()
	for _, y := range sec.Instances() {
		if bs, _ := sec.Get(y, secBootstrap); bs.Bool {
			continue
		}
		if v, ok := sec.Get(y, secServerURI); ok {
			return v.Str
		}
	}
	return ""
}

// newServerObject declares the Server resources this client acts on; a
// Provisioning may set any of them. Executes and writes act on the
// session of the instance they target.
func newServerObject(c *Client, version string) *Static {
	defs := []Resource{
		{ID: serverShortID, Type: model.MustCoreType(1, serverShortID), Ops: OpRead},
		{ID: serverDisable, Type: model.MustCoreType(1, serverDisable), Ops: OpExecute},
		{ID: serverTrigger, Type: model.MustCoreType(1, serverTrigger), Ops: OpExecute},
		{ID: bsServerTrigger, Type: model.MustCoreType(1, bsServerTrigger), Ops: OpExecute}, // bootstrap_run.go
	}
	for res := uint16(0); res <= 27; res++ {
		t, ok := model.CoreTypes(model.NewPath(1, 0, res))
		if !ok || t == model.TypeNone || res == serverShortID {
			continue
		}
		defs = append(defs, Resource{ID: res, Type: t, Ops: OpRW})
	}
	o := NewStatic(1, version, defs...) // no 1.1-only resources: the same in both
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
			// This client speaks UDP only, and its queue mode is set by
			// its Config: a server may write back the binding the client
			// has, not turn queue mode on or off.
			if v.Str != configBinding(c.cfg) {
				return fmt.Errorf("%w: binding %q: this client's binding is %q", ErrBadRequest, v.Str, configBinding(c.cfg))
			}
		}
		return nil // Client.Changed sends the Update once the value is stored
	})
	o.OnExecute(serverDisable, func(_ context.Context, inst uint16, _ string) error {
		if s := c.sessionOf(inst); s != nil {
			s.requestUpdate(updateReq{disable: true})
		}
		return nil
	})
	o.OnExecute(bsServerTrigger, c.bootstrapTrigger)
	o.OnExecute(serverTrigger, func(_ context.Context, inst uint16, _ string) error {
		if s := c.sessionOf(inst); s != nil {
			s.requestUpdate(updateReq{})
		}
		return nil
	})
	return o
}

package lwm2m

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Resources that bootstrap reads beyond those the core serves
// (LwM2M 1.1 Core, Appendix E.1, E.2, E.3).
const (
	bsSecHoldOff          = 11 // /0/x/11 Client Hold Off Time, seconds
	bsServerTrigger       = 9  // /1/x/9 Bootstrap-Request Trigger
	bsServerOnRegFailure  = 16 // /1/x/16 Bootstrap on Registration Failure
	bsACLObject           = 0  // /2/x/0 Object ID
	bsACLInstance         = 1  // /2/x/1 Object Instance ID
	bsACL                 = 2  // /2/x/2 ACL, one instance per short server ID
	bsACLOwner            = 3  // /2/x/3 Access Control Owner
	bsMaxShortServerID    = 65534
	bsACLBits             = 0x1f // Read, Write, Execute, Delete, Create
	bsSecurityModeEST     = 4    // Certificate mode with EST (LwM2M 1.1)
	bsMaxDiagnosticLength = 512
)

// ErrInconsistent reports a configuration of Security, Server and Access
// Control instances that the client cannot use. Bootstrap-Finish answers
// it with 4.06 Not Acceptable (LwM2M 1.1 Core §6.1, Bootstrap-Finish).
var ErrInconsistent = errors.New("lwm2m: inconsistent configuration")

// ProvisioningError lists what is wrong with a Provisioning, one problem
// per entry, each naming the instance or resource at fault. It wraps
// ErrInconsistent.
type ProvisioningError struct {
	Problems []string
}

func (e *ProvisioningError) Error() string {
	return ErrInconsistent.Error() + ": " + strings.Join(e.Problems, "; ")
}

func (e *ProvisioningError) Unwrap() error { return ErrInconsistent }

// Diagnostic is the problems as the diagnostic payload of an error
// response (RFC 7252 §5.5.2), cut to fit a datagram.
func (e *ProvisioningError) Diagnostic() string {
	s := strings.Join(e.Problems, "; ")
	if len(s) > bsMaxDiagnosticLength {
		s = strings.ToValidUTF8(s[:bsMaxDiagnosticLength-3], "") + "..."
	}
	return s
}

// Validate applies the consistency rules of Bootstrap-Finish (LwM2M 1.1
// Core §6.1, Bootstrap-Finish, and the definitions of /0, /1 and /2 in Appendix E): every
// Security instance has a URI this client can reach and the security
// mode and keys its scheme needs; at most one is the Bootstrap-Server
// account; every other has a unique Short Server ID; every Server instance
// has a unique Short Server ID that a Security instance carries, a
// lifetime and a UDP binding; at least one Server instance exists; Access
// Control instances name an object instance, an owner and valid rights.
// The error is a *ProvisioningError.
func (p Provisioning) Validate() error { return p.check(true) }

// check applies the rules; a configuration that only needs to bootstrap
// (a factory file with nothing but the bootstrap server's account) passes
// with needServer false.
func (p Provisioning) check(needServer bool) error {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	for _, r := range p.Records {
		if r.Path.Len() < 3 || r.Path.Object() > 2 {
			bad("%s: only resources of /0, /1 and /2 belong to the configuration", r.Path)
			continue
		}
		if want, ok := model.CoreTypes(r.Path); ok && want != model.TypeNone && r.Value.Type != want {
			bad("%s: a %s value, want %s", r.Path, r.Value.Type, want)
		}
	}
	t := treeOf(p.Records)

	secBySSID := map[int64]uint16{}
	bootstrap := -1
	accounts := 0
	for _, i := range t.instances(0) {
		at := fmt.Sprintf("/0/%d", i)
		isBS, ok := t.value(0, i, secBootstrap)
		if !ok {
			bad("%s/%d: Bootstrap-Server is missing", at, secBootstrap)
		}
		if isBS.Bool {
			if bootstrap >= 0 {
				bad("%s: a second Bootstrap-Server account (the first is /0/%d)", at, bootstrap)
			}
			bootstrap = int(i)
		}
		accounts++
		checkSecurity(t, i, bad)
		if isBS.Bool {
			continue
		}
		if ssid, ok := shortServerID(t, at, 0, i, secShortID, bad); ok {
			if j, dup := secBySSID[ssid.Int]; dup {
				bad("%s: Short Server ID %d is also that of /0/%d", at, ssid.Int, j)
			}
			secBySSID[ssid.Int] = i
		}
	}

	servers := map[int64]uint16{}
	for _, i := range t.instances(1) {
		at := fmt.Sprintf("/1/%d", i)
		if ssid, ok := shortServerID(t, at, 1, i, serverShortID, bad); ok {
			if j, dup := servers[ssid.Int]; dup {
				bad("%s: Short Server ID %d is also that of /1/%d", at, ssid.Int, j)
			}
			servers[ssid.Int] = i
			if _, ok := secBySSID[ssid.Int]; !ok {
				bad("%s: no Security instance has Short Server ID %d", at, ssid.Int)
			}
		}
		if lt, ok := t.value(1, i, serverLifetime); !ok {
			bad("%s/%d: Lifetime is missing", at, serverLifetime)
		} else if lt.Int <= 0 {
			bad("%s/%d: Lifetime %d is not positive", at, serverLifetime, lt.Int)
		}
		if b, ok := t.value(1, i, serverBinding); !ok {
			bad("%s/%d: Binding is missing", at, serverBinding)
		} else if !strings.Contains(b.Str, "U") {
			bad("%s/%d: Binding %q has no U: this client speaks UDP only", at, serverBinding, b.Str)
		}
	}
	if needServer && len(servers) == 0 && len(t.instances(1)) == 0 {
		bad("no Server instance: the client would have no LwM2M server to register with")
	}
	if !needServer && accounts == 0 {
		bad("no Security instance: neither a bootstrap server nor an LwM2M server")
	}

	for _, i := range t.instances(2) {
		at := fmt.Sprintf("/2/%d", i)
		if v, ok := t.value(2, i, bsACLObject); !ok {
			bad("%s/%d: Object ID is missing", at, bsACLObject)
		} else if v.Int < 1 || v.Int > model.MaxID {
			bad("%s/%d: Object ID %d is out of range", at, bsACLObject, v.Int)
		}
		if v, ok := t.value(2, i, bsACLInstance); !ok {
			bad("%s/%d: Object Instance ID is missing", at, bsACLInstance)
		} else if v.Int < 0 || v.Int > 65535 {
			bad("%s/%d: Object Instance ID %d is out of range", at, bsACLInstance, v.Int)
		}
		if v, ok := t.value(2, i, bsACLOwner); !ok {
			bad("%s/%d: Access Control Owner is missing", at, bsACLOwner)
		} else if v.Int < 1 || v.Int > 65535 {
			bad("%s/%d: Access Control Owner %d is out of range 1-65535", at, bsACLOwner, v.Int)
		}
		for _, r := range t[2][i][bsACL] {
			if r.Path.Len() != 4 {
				bad("%s/%d: the ACL is a multiple resource", at, bsACL)
			} else if r.Value.Int < 0 || r.Value.Int > bsACLBits {
				bad("%s: access rights %d are not a combination of R, W, E, D, C (0-31)", r.Path, r.Value.Int)
			}
		}
	}
	if len(probs) > 0 {
		return &ProvisioningError{Problems: probs}
	}
	return nil
}

// checkSecurity checks the URI, the security mode and the keys of
// Security instance /0/i. The problems never quote a key.
// shortServerID returns the Short Server ID at /obj/i/res (at names the
// instance), or says what is wrong with it.
func shortServerID(t tree, at string, obj, i, res uint16, bad func(string, ...any)) (model.Value, bool) {
	ssid, ok := t.value(obj, i, res)
	switch {
	case !ok:
		bad("%s/%d: Short Server ID is missing", at, res)
	case ssid.Int < 1 || ssid.Int > bsMaxShortServerID:
		bad("%s/%d: Short Server ID %d is out of range 1-%d", at, res, ssid.Int, bsMaxShortServerID)
	default:
		return ssid, true
	}
	return ssid, false
}

func checkSecurity(t tree, i uint16, bad func(string, ...any)) {
	at := fmt.Sprintf("/0/%d", i)
	uv, ok := t.value(0, i, secServerURI)
	if !ok || uv.Str == "" {
		bad("%s/%d: Server URI is missing", at, secServerURI)
		return
	}
	u, err := url.Parse(uv.Str)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		bad("%s/%d: Server URI %q is not coap://HOST[:PORT] or coaps://HOST[:PORT]", at, secServerURI, uv.Str)
		return
	}
	mv, ok := t.value(0, i, secMode)
	if !ok {
		bad("%s/%d: Security Mode is missing", at, secMode)
		return
	}
	mode := SecurityMode(mv.Int)
	bytesOf := func(res uint16) []byte { v, _ := t.value(0, i, res); return v.Bytes }
	switch u.Scheme {
	case "coap":
		if mode != SecurityNoSec {
			bad("%s/%d: Security Mode %v with a coap:// URI, which needs NoSec (3)", at, secMode, mode)
		}
	case "coaps":
		switch mode {
		case SecurityNoSec:
			bad("%s/%d: Security Mode NoSec with a coaps:// URI, which needs keys", at, secMode)
		case SecurityPSK:
			if len(bytesOf(secPublicKeyID)) == 0 {
				bad("%s/%d: PSK mode needs a PSK identity", at, secPublicKeyID)
			}
			if len(bytesOf(secSecretKey)) == 0 {
				bad("%s/%d: PSK mode needs a key", at, secSecretKey)
			}
		case SecurityCertificate:
			if _, err := x509.ParseCertificate(bytesOf(secPublicKeyID)); err != nil {
				bad("%s/%d: certificate mode needs the client's certificate (DER): %v", at, secPublicKeyID, err)
			}
			if len(bytesOf(secSecretKey)) == 0 {
				bad("%s/%d: certificate mode needs the client's private key", at, secSecretKey)
			}
		case SecurityRPK:
			bad("%s/%d: Raw Public Key mode is not supported by this client", at, secMode)
		case bsSecurityModeEST:
			bad("%s/%d: certificate mode with EST is not supported by this client", at, secMode)
		default:
			bad("%s/%d: Security Mode %d is not defined (0-4)", at, secMode, mv.Int)
		}
	default:
		bad("%s/%d: Server URI scheme %q is not supported by this client (coap or coaps over UDP)", at, secServerURI, u.Scheme)
	}
}

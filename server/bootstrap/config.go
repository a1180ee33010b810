package bootstrap

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrConfig reports a bad bootstrap configuration; the message names the
// field, as in `endpoints["dev-1"].servers[0].security.key`.
var ErrConfig = errors.New("bootstrap: bad configuration")

// Default is the key of the entry that serves every endpoint without an
// entry of its own.
const Default = "*"

// Config holds what the bootstrap server writes to each endpoint, as the
// configuration file spells it (JSON; docs/SERVER.md has an example).
type Config struct {
	// Endpoints maps an endpoint client name, or Default, to its entry.
	Endpoints map[string]Endpoint `json:"endpoints"`
}

// Endpoint is the configuration one device receives.
type Endpoint struct {
	// Delete lists the paths deleted before the writes (Bootstrap-Delete,
	// LwM2M 1.1 Core §5.2.7.5): "/0", "/1", "/2", an instance such as
	// "/0/1", or "/" for everything the device lets go (it keeps its
	// bootstrap account). Absent means ["/0", "/1"], and "/2" too when
	// ACL is set; an empty list deletes nothing.
	Delete []string `json:"delete,omitempty"`
	// Discover, when set, sends Bootstrap-Discover of /0 (LwM2M 1.1
	// Core §5.2.7.3) after the deletes, and numbers the Security
	// instances from 0 around those the device still has: its
	// bootstrap account, wherever it keeps it. A device that refuses
	// the Discover gets the numbering from 1.
	Discover bool `json:"discover,omitempty"`
	// BootstrapIdentity, when set, is the PSK identity the device must
	// bootstrap with: a request for this endpoint over plain CoAP, or
	// over DTLS with another identity, is refused.
	BootstrapIdentity string `json:"bootstrap_identity,omitempty"`
	// Servers are the LwM2M server accounts written: one Security (/0)
	// and one Server (/1) instance each.
	Servers []Account `json:"servers"`
	// ACL are the Access Control (/2) instances written.
	ACL []ACL `json:"acl,omitempty"`
}

// Account is one LwM2M server account.
type Account struct {
	URI           string `json:"uri"`             // /0/x/0, coap:// or coaps://
	ShortServerID int    `json:"short_server_id"` // /0/x/10 and /1/x/0, 1 to 65534
	// Lifetime is the registration lifetime in seconds (/1/x/1); zero
	// means 86400.
	Lifetime int64 `json:"lifetime,omitempty"`
	// Binding is /1/x/7: "U" (the default), "UQ", "T" ...
	Binding string `json:"binding,omitempty"`
	// NotificationStoring is /1/x/6; absent means true.
	NotificationStoring *bool `json:"notification_storing,omitempty"`
	// DefaultPmin and DefaultPmax are /1/x/2 and /1/x/3 in seconds,
	// written when set.
	DefaultPmin *int64 `json:"default_pmin,omitempty"`
	DefaultPmax *int64 `json:"default_pmax,omitempty"`
	// BootstrapOnRegistrationFailure is /1/x/16, written when set.
	BootstrapOnRegistrationFailure *bool `json:"bootstrap_on_registration_failure,omitempty"`
	// Security holds the credentials written to /0/x.
	Security Security `json:"security"`
	// SecurityInstance and ServerInstance choose the instance IDs;
	// absent means the lowest free ones, Security instances from 1
	// (instance 0 is left to the device's bootstrap account, which
	// is where devices usually keep it).
	SecurityInstance *int `json:"security_instance,omitempty"`
	ServerInstance   *int `json:"server_instance,omitempty"`
}

// Security is an account's credentials (/0/x/2, /0/x/3, /0/x/5). Its
// String, GoString and LogValue leave the key out.
type Security struct {
	// Mode is "psk" or "nosec".
	Mode string `json:"mode"`
	// Identity is the PSK identity (/0/x/3), as text.
	Identity string `json:"identity,omitempty"`
	// Key is the PSK (/0/x/5) in hex.
	Key string `json:"key,omitempty"`
}

func (s Security) String() string {
	if s.Key == "" {
		return fmt.Sprintf("{mode=%s identity=%q}", s.Mode, s.Identity)
	}
	return fmt.Sprintf("{mode=%s identity=%q key=[redacted]}", s.Mode, s.Identity)
}

// GoString keeps %#v from printing the key.
func (s Security) GoString() string { return "bootstrap.Security" + s.String() }

// LogValue keeps slog from printing the key.
func (s Security) LogValue() slog.Value { return slog.StringValue(s.String()) }

// ACL is one Access Control instance (/2/x, LwM2M 1.1 Core §E.3).
type ACL struct {
	Object   int `json:"object"`   // /2/x/0
	Instance int `json:"instance"` // /2/x/1; 65535 is the object itself (for Create)
	// Rights maps a short server ID, or "0" for every other server,
	// to its access: a number (1 Read, 2 Write, 4 Execute, 8 Delete,
	// 16 Create) or letters such as "RWE" (/2/x/2).
	Rights map[string]Rights `json:"rights"`
	// Owner is the Access Control Owner's short server ID (/2/x/3).
	Owner int `json:"owner"`
	// ACLInstance chooses the /2 instance ID; absent means the lowest
	// free one.
	ACLInstance *int `json:"acl_instance,omitempty"`
}

// Rights are access rights of /2/x/2, as a bit mask.
type Rights int64

// The access right bits (LwM2M 1.1 Core §E.3).
const (
	RightRead    Rights = 1 // Read, Observe, Discover, Write-Attributes
	RightWrite   Rights = 2
	RightExecute Rights = 4
	RightDelete  Rights = 8
	RightCreate  Rights = 16
)

// UnmarshalJSON takes a number or letters from "RWEDC".
func (r *Rights) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		*r = Rights(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("want a number or letters from RWEDC")
	}
	var v Rights
	for _, c := range strings.ToUpper(s) {
		i := strings.IndexRune("RWEDC", c)
		if i < 0 {
			return fmt.Errorf("letter %q in %q: want letters from RWEDC", c, s)
		}
		v |= 1 << i
	}
	*r = v
	return nil
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(name string) (*Config, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	c, err := ParseConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// ParseConfig decodes a configuration (JSON; unknown fields are errors,
// to catch misspellings) and checks it with Validate.
func ParseConfig(r io.Reader) (*Config, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if len(b) > maxConfigSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrConfig, maxConfigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return nil, fmt.Errorf("%w: line %d: %s: want %s, not a JSON %s", ErrConfig, line(b, te.Offset), te.Field, te.Type, te.Value)
		case errors.As(err, &se):
			return nil, fmt.Errorf("%w: line %d: %w", ErrConfig, line(b, se.Offset), err)
		}
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: more than one JSON value", ErrConfig)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// maxConfigSize bounds a configuration file.
const maxConfigSize = 16 << 20

// line returns the line number of byte offset off in b.
func line(b []byte, off int64) int {
	off = min(max(off, 0), int64(len(b)))
	return 1 + bytes.Count(b[:off], []byte("\n"))
}

// Validate checks every entry, and reports the first bad field.
func (c *Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("%w: endpoints: no entry (give one per endpoint name, or %q for every endpoint)", ErrConfig, Default)
	}
	names := make([]string, 0, len(c.Endpoints))
	for n := range c.Endpoints {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n == "" {
			return fmt.Errorf("%w: endpoints[\"\"]: an endpoint name cannot be empty", ErrConfig)
		}
		e := c.Endpoints[n]
		if _, err := e.plan(fmt.Sprintf("endpoints[%q]", n), nil); err != nil {
			return err
		}
	}
	return nil
}

// entry returns ep's entry, or the Default one.
func (c *Config) entry(ep string) (Endpoint, bool) {
	if e, ok := c.Endpoints[ep]; ok {
		return e, true
	}
	e, ok := c.Endpoints[Default]
	return e, ok
}

// Resources of the Security (/0), Server (/1) and Access Control (/2)
// objects (LwM2M 1.1 Core, Appendix E.1 to E.3).
const (
	secURI       = 0
	secBootstrap = 1
	secMode      = 2
	secIdentity  = 3
	secServerKey = 4
	secKey       = 5
	secSSID      = 10

	srvSSID        = 0
	srvLifetime    = 1
	srvPmin        = 2
	srvPmax        = 3
	srvStoring     = 6
	srvBinding     = 7
	srvBSOnFailure = 16

	aclObject   = 0
	aclInstance = 1
	aclRights   = 2
	aclOwner    = 3
)

// Security modes of /0/x/2.
const (
	modePSK   = 0
	modeNoSec = 3
)

// step is one operation of a bootstrap: a Bootstrap-Delete of path, or
// a Bootstrap-Write of recs to path. what describes a write for the
// history, without keys.
type step struct {
	delete bool
	path   model.Path
	recs   []model.Record
	what   string
}

// plan checks e and returns its operations in order: deletes, then
// Security, Server and Access Control instances. at names e in errors.
// found, when not nil, are the Security instances a Bootstrap-Discover
// found on the device: automatic Security IDs then start at 0 and go
// around them, instead of starting at 1.
func (e Endpoint) plan(at string, found map[int]bool) ([]step, error) {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s.%s: %s", ErrConfig, at, field, fmt.Sprintf(format, a...))
	}
	var steps []step
	dels := e.Delete
	if dels == nil {
		dels = []string{"/0", "/1"}
		if len(e.ACL) > 0 {
			dels = append(dels, "/2")
		}
	}
	for i, d := range dels {
		p, err := model.ParsePath(d)
		if err != nil || p.Len() > 2 || (p.Len() > 0 && p.Object() > 2) {
			return nil, bad(fmt.Sprintf("delete[%d]", i), "%q: want /, /0, /1, /2 or an instance of them", d)
		}
		steps = append(steps, step{delete: true, path: p})
	}
	if len(e.Servers) == 0 {
		return nil, bad("servers", "no LwM2M server account: a device needs at least one")
	}
	// Automatic IDs keep clear of every explicit one.
	secRes, srvRes, aclRes := map[int]bool{}, map[int]bool{}, map[int]bool{}
	for _, a := range e.Servers {
		reserve(secRes, a.SecurityInstance)
		reserve(srvRes, a.ServerInstance)
	}
	for _, a := range e.ACL {
		reserve(aclRes, a.ACLInstance)
	}
	secIDs, srvIDs, ssids := map[int]bool{}, map[int]bool{}, map[int]bool{}
	var writes []step
	nextSec, nextSrv := 1, 0
	if found != nil {
		nextSec = 0
		for id := range found {
			secRes[id] = true
		}
	}
	for i, a := range e.Servers {
		f := fmt.Sprintf("servers[%d]", i)
		secInst, err := instanceID(a.SecurityInstance, &nextSec, secIDs, secRes)
		if err != nil {
			return nil, bad(f+".security_instance", "%v", err)
		}
		srvInst, err := instanceID(a.ServerInstance, &nextSrv, srvIDs, srvRes)
		if err != nil {
			return nil, bad(f+".server_instance", "%v", err)
		}
		sec, srv, err := a.records(uint16(secInst), uint16(srvInst), func(field, format string, args ...any) error {
			return bad(f+"."+field, format, args...)
		})
		if err != nil {
			return nil, err
		}
		if ssids[a.ShortServerID] {
			return nil, bad(f+".short_server_id", "%d is given to two accounts", a.ShortServerID)
		}
		ssids[a.ShortServerID] = true
		writes = append(writes, sec, srv)
	}
	sortSteps(writes)
	steps = append(steps, writes...)
	aclIDs := map[int]bool{}
	nextACL := 0
	var acls []step
	for i, acl := range e.ACL {
		f := fmt.Sprintf("acl[%d]", i)
		id, err := instanceID(acl.ACLInstance, &nextACL, aclIDs, aclRes)
		if err != nil {
			return nil, bad(f+".acl_instance", "%v", err)
		}
		s, err := acl.records(uint16(id), func(field, format string, args ...any) error {
			return bad(f+"."+field, format, args...)
		})
		if err != nil {
			return nil, err
		}
		acls = append(acls, s)
	}
	sortSteps(acls)
	return append(steps, acls...), nil
}

func sortSteps(s []step) {
	sort.SliceStable(s, func(i, j int) bool {
		a, b := s[i].path, s[j].path
		if a.Object() != b.Object() {
			return a.Object() < b.Object()
		}
		return a.Instance() < b.Instance()
	})
}

func reserve(m map[int]bool, id *int) {
	if id != nil {
		m[*id] = true
	}
}

// instanceID returns the explicit ID, checked and marked used, or the
// lowest ID from *next on that is neither used nor reserved (for an
// explicit ID of another).
func instanceID(explicit *int, next *int, used, reserved map[int]bool) (int, error) {
	if explicit != nil {
		id := *explicit
		if id < 0 || id > model.MaxID {
			return 0, fmt.Errorf("%d is not an instance ID (0 to %d)", id, model.MaxID)
		}
		if used[id] {
			return 0, fmt.Errorf("instance %d is used twice", id)
		}
		used[id] = true
		return id, nil
	}
	for used[*next] || reserved[*next] {
		*next++
	}
	if *next > model.MaxID {
		return 0, errors.New("no free instance ID")
	}
	id := *next
	used[id] = true
	*next++
	return id, nil
}

// records returns the Bootstrap-Writes of a's Security and Server
// instances.
func (a Account) records(secInst, srvInst uint16, bad func(field, format string, a ...any) error) (sec, srv step, err error) {
	u, err := url.Parse(a.URI)
	switch {
	case a.URI == "":
		return sec, srv, bad("uri", "missing: the LwM2M server's URI, such as coaps://lwm2m.example.com:5684")
	case err != nil:
		return sec, srv, bad("uri", "%q: %v", a.URI, err)
	case u.Scheme != "coap" && u.Scheme != "coaps":
		return sec, srv, bad("uri", "%q: want a coap:// or coaps:// URI", a.URI)
	case u.Host == "":
		return sec, srv, bad("uri", "%q has no host", a.URI)
	}
	if a.ShortServerID < 1 || a.ShortServerID > 65534 {
		return sec, srv, bad("short_server_id", "%d: want 1 to 65534 (LwM2M 1.1 Core §E.1)", a.ShortServerID)
	}
	lifetime := a.Lifetime
	if lifetime == 0 {
		lifetime = 86400
	}
	if lifetime < 0 || lifetime > 1<<31-1 {
		return sec, srv, bad("lifetime", "%d: want a positive number of seconds", a.Lifetime)
	}
	binding := a.Binding
	if binding == "" {
		binding = "U"
	}
	if strings.Trim(binding, "UTSNQ") != "" || len(binding) > 8 {
		return sec, srv, bad("binding", "%q: want letters from UTSNQ, such as U or UQ", a.Binding)
	}
	for _, p := range []struct {
		name string
		v    *int64
	}{{"default_pmin", a.DefaultPmin}, {"default_pmax", a.DefaultPmax}} {
		if p.v != nil && *p.v < 0 {
			return sec, srv, bad(p.name, "%d: want 0 or more seconds", *p.v)
		}
	}
	sp := model.NewPath(0, secInst)
	s := a.Security
	recs := []model.Record{
		{Path: sp.Append(secURI), Value: model.String(a.URI)},
		{Path: sp.Append(secBootstrap), Value: model.Bool(false)},
	}
	what := fmt.Sprintf("uri=%s ssid=%d", a.URI, a.ShortServerID)
	switch strings.ToLower(s.Mode) {
	case "psk":
		if u.Scheme != "coaps" {
			return sec, srv, bad("security.mode", "psk with the coap:// URI %q: want coaps://", a.URI)
		}
		if s.Identity == "" {
			return sec, srv, bad("security.identity", "missing: psk needs the PSK identity")
		}
		key, err := hex.DecodeString(s.Key)
		if err != nil || len(key) == 0 {
			// Never quote the key.
			return sec, srv, bad("security.key", "missing or not hex: psk needs the key in hex")
		}
		recs = append(recs,
			model.Record{Path: sp.Append(secMode), Value: model.Int(modePSK)},
			model.Record{Path: sp.Append(secIdentity), Value: model.Opaque([]byte(s.Identity))},
			model.Record{Path: sp.Append(secServerKey), Value: model.Opaque([]byte{})},
			model.Record{Path: sp.Append(secKey), Value: model.Opaque(key)})
		what += fmt.Sprintf(" mode=psk identity=%q", s.Identity)
	case "nosec":
		if u.Scheme != "coap" {
			return sec, srv, bad("security.mode", "nosec with the coaps:// URI %q: want coap://, or mode psk", a.URI)
		}
		if s.Identity != "" || s.Key != "" {
			return sec, srv, bad("security", "nosec takes no identity or key")
		}
		recs = append(recs,
			model.Record{Path: sp.Append(secMode), Value: model.Int(modeNoSec)},
			model.Record{Path: sp.Append(secIdentity), Value: model.Opaque([]byte{})},
			model.Record{Path: sp.Append(secServerKey), Value: model.Opaque([]byte{})},
			model.Record{Path: sp.Append(secKey), Value: model.Opaque([]byte{})})
		what += " mode=nosec"
	case "":
		return sec, srv, bad("security.mode", "missing: want psk or nosec")
	default:
		return sec, srv, bad("security.mode", "%q is not supported: want psk or nosec", s.Mode)
	}
	recs = append(recs, model.Record{Path: sp.Append(secSSID), Value: model.Int(int64(a.ShortServerID))})
	sec = step{path: sp, recs: recs, what: what}

	storing := a.NotificationStoring == nil || *a.NotificationStoring
	vp := model.NewPath(1, srvInst)
	recs = []model.Record{
		{Path: vp.Append(srvSSID), Value: model.Int(int64(a.ShortServerID))},
		{Path: vp.Append(srvLifetime), Value: model.Int(lifetime)},
	}
	what = fmt.Sprintf("ssid=%d lifetime=%d binding=%s storing=%t", a.ShortServerID, lifetime, binding, storing)
	if a.DefaultPmin != nil {
		recs = append(recs, model.Record{Path: vp.Append(srvPmin), Value: model.Int(*a.DefaultPmin)})
		what += " pmin=" + strconv.FormatInt(*a.DefaultPmin, 10)
	}
	if a.DefaultPmax != nil {
		recs = append(recs, model.Record{Path: vp.Append(srvPmax), Value: model.Int(*a.DefaultPmax)})
		what += " pmax=" + strconv.FormatInt(*a.DefaultPmax, 10)
	}
	recs = append(recs,
		model.Record{Path: vp.Append(srvStoring), Value: model.Bool(storing)},
		model.Record{Path: vp.Append(srvBinding), Value: model.String(binding)})
	if a.BootstrapOnRegistrationFailure != nil {
		recs = append(recs, model.Record{Path: vp.Append(srvBSOnFailure), Value: model.Bool(*a.BootstrapOnRegistrationFailure)})
		what += fmt.Sprintf(" bootstrap_on_failure=%t", *a.BootstrapOnRegistrationFailure)
	}
	return sec, step{path: vp, recs: recs, what: what}, nil
}

// records returns the Bootstrap-Write of the ACL instance inst.
func (acl ACL) records(inst uint16, bad func(field, format string, a ...any) error) (step, error) {
	if acl.Object < 1 || acl.Object > model.MaxID {
		return step{}, bad("object", "%d: want an object ID from 1 to %d", acl.Object, model.MaxID)
	}
	if acl.Instance < 0 || acl.Instance > 65535 {
		return step{}, bad("instance", "%d: want an instance ID, or 65535 for the object", acl.Instance)
	}
	if acl.Owner < 1 || acl.Owner > 65535 {
		return step{}, bad("owner", "%d: want the owner's short server ID (1 to 65534, or 65535 for the bootstrap server)", acl.Owner)
	}
	if len(acl.Rights) == 0 {
		return step{}, bad("rights", "empty: give at least one server's rights")
	}
	p := model.NewPath(2, inst)
	recs := []model.Record{
		{Path: p.Append(aclObject), Value: model.Int(int64(acl.Object))},
		{Path: p.Append(aclInstance), Value: model.Int(int64(acl.Instance))},
	}
	rights := make(map[int]Rights, len(acl.Rights))
	ids := make([]int, 0, len(acl.Rights))
	for k, r := range acl.Rights {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 || id > 65534 {
			return step{}, bad("rights", "key %q: want a short server ID, or 0 for the default", k)
		}
		if _, dup := rights[id]; dup {
			return step{}, bad("rights", "short server ID %d is given twice", id)
		}
		if r < 0 || r > 31 {
			return step{}, bad(fmt.Sprintf("rights[%q]", k), "%d: want bits of 1 Read, 2 Write, 4 Execute, 8 Delete, 16 Create", r)
		}
		rights[id] = r
		ids = append(ids, id)
	}
	sort.Ints(ids)
	what := fmt.Sprintf("object=%d instance=%d owner=%d", acl.Object, acl.Instance, acl.Owner)
	for _, id := range ids {
		r := rights[id]
		recs = append(recs, model.Record{Path: p.Append(aclRights).Append(uint16(id)), Value: model.Int(int64(r))})
		what += fmt.Sprintf(" acl[%d]=%d", id, r)
	}
	recs = append(recs, model.Record{Path: p.Append(aclOwner), Value: model.Int(int64(acl.Owner))})
	return step{path: p, recs: recs, what: what}, nil
}

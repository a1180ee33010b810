package lwm2m

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrFactoryConfig reports a factory configuration file that cannot be
// used; the message names the file and the field at fault.
var ErrFactoryConfig = errors.New("lwm2m: factory configuration")

// FactoryConfig is the factory configuration file: the Security, Server
// and Access Control instances a device starts with, written by a person
// or a production line in JSON. The smallest useful one names the
// bootstrap server:
//
//	{"security": [{"uri": "coaps://bs.example.net:5684", "bootstrap": true,
//	  "mode": "psk", "psk_identity": "dev-1", "psk_key": "000102030405060708090a0b0c0d0e0f"}]}
//
// A device may also be configured for an LwM2M server directly, with a
// Security and a Server instance of the same short server ID. Keys are
// given in hex; certificates and private keys as PEM files, named
// relative to the configuration file.
type FactoryConfig struct {
	Security      []FactorySecurity      `json:"security"`
	Server        []FactoryServer        `json:"server"`
	AccessControl []FactoryAccessControl `json:"access_control"`
}

// FactorySecurity is one Security instance (/0/x).
type FactorySecurity struct {
	Instance      *uint16 `json:"instance"`  // default: its index in the list
	URI           string  `json:"uri"`       // /0/x/0
	Bootstrap     bool    `json:"bootstrap"` // /0/x/1: the bootstrap server's account
	Mode          string  `json:"mode"`      // /0/x/2: nosec, psk or certificate; default nosec for coap://
	ShortServerID uint16  `json:"short_server_id"`
	// PSKIdentity is the identity as text, PSKIdentityHex as hex bytes.
	PSKIdentity    string `json:"psk_identity"`
	PSKIdentityHex string `json:"psk_identity_hex"`
	PSKKey         string `json:"psk_key"` // hex
	// Certificate mode: PEM files.
	CertificateFile       string `json:"certificate_file"`
	PrivateKeyFile        string `json:"private_key_file"`
	ServerCertificateFile string `json:"server_certificate_file"`
	HoldOff               int64  `json:"hold_off"` // /0/x/11, seconds before bootstrapping
}

// FactoryServer is one Server instance (/1/x).
type FactoryServer struct {
	Instance              *uint16 `json:"instance"`
	ShortServerID         uint16  `json:"short_server_id"`
	Lifetime              int64   `json:"lifetime"` // seconds; default 86400
	DefaultPmin           int64   `json:"default_pmin"`
	DefaultPmax           int64   `json:"default_pmax"`
	NotificationStoring   bool    `json:"notification_storing"`
	Binding               string  `json:"binding"`                           // default U
	BootstrapOnRegFailure *bool   `json:"bootstrap_on_registration_failure"` // /1/x/16, default true
}

// FactoryAccessControl is one Access Control instance (/2/x).
type FactoryAccessControl struct {
	Instance       *uint16           `json:"instance"`
	Object         uint16            `json:"object"`
	ObjectInstance uint16            `json:"object_instance"`
	ACL            map[string]uint16 `json:"acl"` // short server ID ("0": default) to rights
	Owner          uint16            `json:"owner"`
}

// ReadFactoryFile reads and checks the factory configuration file at
// path. Errors wrap ErrFactoryConfig and name the field at fault; they
// never quote a key.
func ReadFactoryFile(path string) (Provisioning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Provisioning{}, fmt.Errorf("%w: %w", ErrFactoryConfig, err)
	}
	var fc FactoryConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return Provisioning{}, fmt.Errorf("%w: %s: %w", ErrFactoryConfig, path, jsonProblem(data, err))
	}
	p, err := fc.Provisioning(filepath.Dir(path))
	if err != nil {
		return Provisioning{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// jsonProblem says where in data a JSON error is, as line:column.
func jsonProblem(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	off := int64(-1)
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return err
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Errorf("line %d, column %d: %w", line, col, err)
}

// Provisioning turns the configuration into the client's instances and
// checks them. dir is where relative file names are found.
func (fc FactoryConfig) Provisioning(dir string) (Provisioning, error) {
	var recs []model.Record
	add := func(p model.Path, v model.Value) { recs = append(recs, model.Record{Path: p, Value: v}) }
	instance := func(kind string, i int, id *uint16, seen map[uint16]bool) (uint16, error) {
		inst := uint16(i)
		if id != nil {
			inst = *id
		}
		if seen[inst] {
			return 0, fmt.Errorf("%w: %s[%d].instance: instance %d appears twice", ErrFactoryConfig, kind, i, inst)
		}
		seen[inst] = true
		return inst, nil
	}
	seen := map[uint16]bool{}
	for i, s := range fc.Security {
		inst, err := instance("security", i, s.Instance, seen)
		if err != nil {
			return Provisioning{}, err
		}
		field := func(name string) string { return fmt.Sprintf("security[%d].%s", i, name) }
		if s.URI == "" {
			return Provisioning{}, fmt.Errorf("%w: %s is missing", ErrFactoryConfig, field("uri"))
		}
		mode, err := factoryMode(s.Mode, s.URI)
		if err != nil {
			return Provisioning{}, fmt.Errorf("%w: %s: %w", ErrFactoryConfig, field("mode"), err)
		}
		var id, server, secret []byte
		switch mode {
		case SecurityPSK:
			switch {
			case s.PSKIdentity != "" && s.PSKIdentityHex != "":
				return Provisioning{}, fmt.Errorf("%w: %s and %s both given", ErrFactoryConfig, field("psk_identity"), field("psk_identity_hex"))
			case s.PSKIdentityHex != "":
				if id, err = hex.DecodeString(s.PSKIdentityHex); err != nil {
					return Provisioning{}, fmt.Errorf("%w: %s is not hex", ErrFactoryConfig, field("psk_identity_hex"))
				}
			default:
				id = []byte(s.PSKIdentity)
			}
			if len(id) == 0 {
				return Provisioning{}, fmt.Errorf("%w: %s is missing (PSK mode)", ErrFactoryConfig, field("psk_identity"))
			}
			if s.PSKKey == "" {
				return Provisioning{}, fmt.Errorf("%w: %s is missing (PSK mode)", ErrFactoryConfig, field("psk_key"))
			}
			if secret, err = hex.DecodeString(s.PSKKey); err != nil {
				return Provisioning{}, fmt.Errorf("%w: %s is not hex", ErrFactoryConfig, field("psk_key")) // never quote a key
			}
		case SecurityCertificate:
			if id, err = readPEM(dir, s.CertificateFile, "CERTIFICATE"); err != nil {
				return Provisioning{}, fmt.Errorf("%w: %s: %w", ErrFactoryConfig, field("certificate_file"), err)
			}
			if secret, err = readPrivateKey(dir, s.PrivateKeyFile); err != nil {
				return Provisioning{}, fmt.Errorf("%w: %s: %w", ErrFactoryConfig, field("private_key_file"), err)
			}
			if s.ServerCertificateFile != "" {
				if server, err = readPEM(dir, s.ServerCertificateFile, "CERTIFICATE"); err != nil {
					return Provisioning{}, fmt.Errorf("%w: %s: %w", ErrFactoryConfig, field("server_certificate_file"), err)
				}
			}
		}
		if mode != SecurityPSK && (s.PSKIdentity != "" || s.PSKIdentityHex != "" || s.PSKKey != "") {
			return Provisioning{}, fmt.Errorf("%w: %s: a PSK is given but the mode is %v", ErrFactoryConfig, field("mode"), mode)
		}
		if s.HoldOff < 0 {
			return Provisioning{}, fmt.Errorf("%w: %s %d is negative", ErrFactoryConfig, field("hold_off"), s.HoldOff)
		}
		if s.Bootstrap && s.ShortServerID != 0 {
			return Provisioning{}, fmt.Errorf("%w: %s: the bootstrap server's account has no short server ID", ErrFactoryConfig, field("short_server_id"))
		}
		add(model.NewPath(0, inst, secServerURI), model.String(s.URI))
		add(model.NewPath(0, inst, secBootstrap), model.Bool(s.Bootstrap))
		add(model.NewPath(0, inst, secMode), model.Int(int64(mode)))
		add(model.NewPath(0, inst, secPublicKeyID), model.Opaque(id))
		add(model.NewPath(0, inst, secServerKey), model.Opaque(server))
		add(model.NewPath(0, inst, secSecretKey), model.Opaque(secret))
		if !s.Bootstrap {
			add(model.NewPath(0, inst, secShortID), model.Int(int64(s.ShortServerID)))
		}
		add(model.NewPath(0, inst, bsSecHoldOff), model.Int(s.HoldOff))
	}
	seen = map[uint16]bool{}
	for i, s := range fc.Server {
		inst, err := instance("server", i, s.Instance, seen)
		if err != nil {
			return Provisioning{}, err
		}
		lt := s.Lifetime
		if lt == 0 {
			lt = 86400
		}
		b := s.Binding
		if b == "" {
			b = "U"
		}
		onFail := s.BootstrapOnRegFailure == nil || *s.BootstrapOnRegFailure
		add(model.NewPath(1, inst, serverShortID), model.Int(int64(s.ShortServerID)))
		add(model.NewPath(1, inst, serverLifetime), model.Int(lt))
		add(model.NewPath(1, inst, serverPmin), model.Int(s.DefaultPmin))
		add(model.NewPath(1, inst, serverPmax), model.Int(s.DefaultPmax))
		add(model.NewPath(1, inst, serverDisableTO), model.Int(86400))
		add(model.NewPath(1, inst, serverStoring), model.Bool(s.NotificationStoring))
		add(model.NewPath(1, inst, serverBinding), model.String(b))
		add(model.NewPath(1, inst, bsServerOnRegFailure), model.Bool(onFail))
	}
	seen = map[uint16]bool{}
	for i, a := range fc.AccessControl {
		inst, err := instance("access_control", i, a.Instance, seen)
		if err != nil {
			return Provisioning{}, err
		}
		add(model.NewPath(2, inst, bsACLObject), model.Int(int64(a.Object)))
		add(model.NewPath(2, inst, bsACLInstance), model.Int(int64(a.ObjectInstance)))
		for k, rights := range a.ACL {
			ssid, err := strconv.ParseUint(k, 10, 16)
			if err != nil {
				return Provisioning{}, fmt.Errorf("%w: access_control[%d].acl: key %q is not a short server ID", ErrFactoryConfig, i, k)
			}
			add(model.NewPath(2, inst, bsACL, uint16(ssid)), model.Int(int64(rights)))
		}
		add(model.NewPath(2, inst, bsACLOwner), model.Int(int64(a.Owner)))
	}
	sortRecords(recs)
	p := Provisioning{Records: recs}
	if err := p.check(false); err != nil {
		return Provisioning{}, fmt.Errorf("%w: %w", ErrFactoryConfig, err)
	}
	return p, nil
}

// factoryMode parses a security mode name; an empty one follows the URI.
func factoryMode(s, uri string) (SecurityMode, error) {
	switch strings.ToLower(s) {
	case "":
		if strings.HasPrefix(uri, "coaps:") {
			return 0, errors.New("missing: a coaps:// server needs psk or certificate")
		}
		return SecurityNoSec, nil
	case "nosec":
		return SecurityNoSec, nil
	case "psk":
		return SecurityPSK, nil
	case "certificate", "cert", "x509":
		return SecurityCertificate, nil
	case "rpk":
		return 0, errors.New("rpk: raw public keys are not supported by this client")
	}
	return 0, fmt.Errorf("%q: want nosec, psk or certificate", s)
}

// readPEM returns the DER of the first PEM block of type typ in file name.
func readPEM(dir, name, typ string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("missing")
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(dir, name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%s: no PEM block %q", name, typ)
		}
		if b.Type == typ {
			return b.Bytes, nil
		}
	}
}

// readPrivateKey returns the private key in file name as PKCS #8 DER,
// whatever PEM form it came in.
func readPrivateKey(dir, name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("missing")
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(dir, name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%s: no private key", name)
		}
		var key any
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: private key does not parse", name)
		}
		return x509.MarshalPKCS8PrivateKey(key)
	}
}

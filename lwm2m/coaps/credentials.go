package coaps

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

// Credentials returns cfg as the Security object holds it (/0/x/2..5),
// for lwm2m.Client.SetCredentials: PSK mode stores the identity and the
// key, certificate mode the client certificate, the pinned server
// certificate and the client's private key (PKCS #8), all DER.
func Credentials(cfg Config) (lwm2m.Credentials, error) {
	if len(cfg.PSK) > 0 {
		return lwm2m.Credentials{
			Mode:        lwm2m.SecurityPSK,
			PublicKeyID: bytes.Clone(cfg.PSKIdentity),
			SecretKey:   bytes.Clone(cfg.PSK),
		}, nil
	}
	cr := lwm2m.Credentials{Mode: lwm2m.SecurityCertificate, ServerKey: bytes.Clone(cfg.ServerCertificate)}
	if c := cfg.Certificate; c != nil {
		if len(c.Certificate) > 0 {
			cr.PublicKeyID = bytes.Clone(c.Certificate[0])
		}
		if c.PrivateKey != nil {
			k, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
			if err != nil {
				return lwm2m.Credentials{}, fmt.Errorf("%w: client key: %w", ErrConfig, err)
			}
			cr.SecretKey = k
		}
	}
	return cr, nil
}

// FromCredentials is the inverse of Credentials: it builds the Config for
// server from Security object values, the Security Mode deciding which.
// Mode 1 (RPK) gives ErrRPK and mode 3 (NoSec) ErrNoSec.
func FromCredentials(server string, cr lwm2m.Credentials) (Config, error) {
	cfg := Config{Server: server}
	switch cr.Mode {
	case lwm2m.SecurityPSK:
		cfg.PSKIdentity = bytes.Clone(cr.PublicKeyID)
		cfg.PSK = bytes.Clone(cr.SecretKey)
		return cfg, nil
	case lwm2m.SecurityCertificate:
		if len(cr.PublicKeyID) > 0 {
			leaf, err := x509.ParseCertificate(cr.PublicKeyID)
			if err != nil {
				return Config{}, fmt.Errorf("%w: client certificate: %w", ErrConfig, err)
			}
			key, err := parsePrivateKey(cr.SecretKey)
			if err != nil {
				return Config{}, err
			}
			cfg.Certificate = &tls.Certificate{Certificate: [][]byte{cr.PublicKeyID}, PrivateKey: key, Leaf: leaf}
		}
		cfg.ServerCertificate = bytes.Clone(cr.ServerKey)
		return cfg, nil
	case lwm2m.SecurityRPK:
		return Config{}, ErrRPK
	case lwm2m.SecurityNoSec:
		return Config{}, ErrNoSec
	default:
		return Config{}, fmt.Errorf("%w: unknown security mode %d", ErrConfig, int64(cr.Mode))
	}
}

// parsePrivateKey reads a DER private key: PKCS #8, SEC 1 (EC) or PKCS #1.
func parsePrivateKey(der []byte) (any, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		switch k.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("%w: client key: unsupported type %T", ErrConfig, k)
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: client key is not PKCS #8, SEC 1 or PKCS #1 DER", ErrConfig)
}

// LoadServerCertificate reads the server certificate to pin (the
// -server-cert file) in PEM or DER and returns its DER.
func LoadServerCertificate(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if b, _ := pem.Decode(data); b != nil {
		data = b.Bytes
	}
	if _, err := x509.ParseCertificate(data); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	return data, nil
}

package fwpkg

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
)

// GenerateKey makes an ed25519 key pair for signing packages. If rand is
// nil, crypto/rand is used.
func GenerateKey(rand io.Reader) (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand)
	if err != nil {
		return nil, nil, fmt.Errorf("fwpkg: generating key: %w", err)
	}
	return pub, priv, nil
}

// MarshalPrivateKey encodes key as a PKCS#8 "PRIVATE KEY" PEM block, the
// form `openssl genpkey -algorithm ed25519` writes.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("fwpkg: encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey encodes key as a PKIX "PUBLIC KEY" PEM block, the form
// `openssl pkey -pubout` writes.
func MarshalPublicKey(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("fwpkg: encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes the first PEM block of data, which must be an
// ed25519 key in PKCS#8 form.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	der, err := pemBlock(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("fwpkg: parsing private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("fwpkg: private key is a %T, want ed25519", k)
	}
	return priv, nil
}

// ParsePublicKey decodes the first PEM block of data, which must be an
// ed25519 key in PKIX form.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	der, err := pemBlock(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("fwpkg: parsing public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("fwpkg: public key is a %T, want ed25519", k)
	}
	return pub, nil
}

var errNoPEM = errors.New("fwpkg: no PEM block found")

func pemBlock(data []byte, typ string) ([]byte, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errNoPEM
	}
	if b.Type != typ {
		return nil, fmt.Errorf("fwpkg: PEM block is %q, want %q", b.Type, typ)
	}
	return b.Bytes, nil
}

package dtlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"
)

func selfSigned(t *testing.T, key *ecdsa.PrivateKey, serial int64) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "s"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerifyPin(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := selfSigned(t, k1, 1)
	renewed := selfSigned(t, k1, 2) // same key, new certificate
	other := selfSigned(t, k2, 3)
	leaf, _ := x509.ParseCertificate(cert)

	for name, pin := range map[string][]byte{"certificate": cert, "public key": leaf.RawSubjectPublicKeyInfo, "renewed": renewed} {
		if err := VerifyPin(pin, [][]byte{cert}); err != nil {
			t.Errorf("%s pin: %v", name, err)
		}
	}
	if err := VerifyPin(other, [][]byte{cert}); !errors.Is(err, ErrCertificate) {
		t.Errorf("other key: err = %v, want ErrCertificate", err)
	}
	if err := VerifyPin(cert, nil); !errors.Is(err, ErrCertificate) {
		t.Errorf("no certificate: err = %v, want ErrCertificate", err)
	}
	if err := VerifyPin(cert, [][]byte{[]byte("junk")}); !errors.Is(err, ErrCertificate) {
		t.Errorf("junk certificate: err = %v, want ErrCertificate", err)
	}
}

func TestOptionsNeedCredentials(t *testing.T) {
	if _, err := (&Config{}).Options("h"); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("err = %v, want ErrNoCredentials", err)
	}
	if _, err := (&Config{PSKIdentity: []byte("i"), PSK: []byte("k")}).Options("h"); err != nil {
		t.Errorf("PSK: %v", err)
	}
}

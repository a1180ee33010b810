package lwm2m_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

func writeFactory(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "factory.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func valueAt(p lwm2m.Provisioning, path model.Path) (model.Value, bool) {
	for _, r := range p.Records {
		if r.Path == path {
			return r.Value, true
		}
	}
	return model.Value{}, false
}

func TestReadFactoryFileBootstrapPSK(t *testing.T) {
	path := writeFactory(t, `{"security": [{"uri": "coaps://127.0.0.1:5784", "bootstrap": true,
		"mode": "psk", "psk_identity": "dev-1", "psk_key": "000102030405060708090a0b0c0d0e0f"}]}`)
	p, err := lwm2m.ReadFactoryFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []model.Record{
		{Path: model.NewPath(0, 0, 0), Value: model.String("coaps://127.0.0.1:5784")},
		{Path: model.NewPath(0, 0, 1), Value: model.Bool(true)},
		{Path: model.NewPath(0, 0, 2), Value: model.Int(0)},
		{Path: model.NewPath(0, 0, 3), Value: model.Opaque([]byte("dev-1"))},
		{Path: model.NewPath(0, 0, 5), Value: model.Opaque([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})},
	} {
		if v, ok := valueAt(p, want.Path); !ok || !v.Equal(want.Value) {
			t.Errorf("%s = %v, want %v", want.Path, v, want.Value)
		}
	}
}

func TestReadFactoryFileServerDirect(t *testing.T) {
	path := writeFactory(t, `{"security": [{"uri": "coap://127.0.0.1:5683", "short_server_id": 3}],
		"server": [{"short_server_id": 3, "lifetime": 60}]}`)
	p, err := lwm2m.ReadFactoryFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("a direct server configuration is not consistent: %v", err)
	}
	if v, _ := valueAt(p, model.NewPath(1, 0, 16)); !v.Bool {
		t.Errorf("Bootstrap on Registration Failure defaults to %v, want true", v)
	}
}

// Every mistake is named by its field, and no key is quoted.
func TestReadFactoryFileErrors(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{`{"security": [{"bootstrap": true}]}`, "security[0].uri is missing"},
		{`{"security": [{"uri": "coaps://h:1", "bootstrap": true, "mode": "psk", "psk_identity": "x", "psk_key": "zzsecretzz"}]}`, "security[0].psk_key is not hex"},
		{`{"security": [{"uri": "coaps://h:1", "bootstrap": true, "mode": "psk", "psk_key": "00"}]}`, "security[0].psk_identity is missing"},
		{`{"security": [{"uri": "coaps://h:1", "bootstrap": true}]}`, "security[0].mode: missing"},
		{`{"security": [{"uri": "coap://h:1", "bootstrap": true, "mode": "rpk"}]}`, "raw public keys are not supported"},
		{`{"security": [{"uri": "coap://h:1", "bootstrap": true, "mdoe": "nosec"}]}`, `unknown field "mdoe"`},
		{`{"security": [{"uri": "coap://h:1", "bootstrap": true,}]}`, "line 1, column"},
		{`{"security": [{"uri": "coap://h:1", "short_server_id": 1}], "server": [{"short_server_id": 2}]}`, "/1/0: no Security instance has Short Server ID 2"},
		{`{}`, "no Security instance"},
		{`{"security": [{"uri": "coap://h:1", "bootstrap": true}, {"instance": 0, "uri": "coap://h:2", "short_server_id": 1}]}`, "security[1].instance: instance 0 appears twice"},
	} {
		path := writeFactory(t, tc.content)
		_, err := lwm2m.ReadFactoryFile(path)
		if !errors.Is(err, lwm2m.ErrFactoryConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an ErrFactoryConfig saying %q", tc.content, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("the error quotes a key: %v", err)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("the error does not name the file: %v", err)
		}
	}
}

// Certificate mode reads PEM files named relative to the factory file and
// stores the certificates as DER and the key as PKCS #8.
func TestReadFactoryFileCertificate(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dev-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*pem.Block{
		"dev.pem":    {Type: "CERTIFICATE", Bytes: der},
		"dev.key":    {Type: "EC PRIVATE KEY", Bytes: ecDER},
		"server.pem": {Type: "CERTIFICATE", Bytes: der},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "factory.json")
	if err := os.WriteFile(path, []byte(`{"security": [{"uri": "coaps://127.0.0.1:5784", "bootstrap": true, "mode": "certificate",
		"certificate_file": "dev.pem", "private_key_file": "dev.key", "server_certificate_file": "server.pem"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := lwm2m.ReadFactoryFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := valueAt(p, model.NewPath(0, 0, 3)); !bytes.Equal(v.Bytes, der) {
		t.Error("/0/0/3 is not the certificate's DER")
	}
	if v, _ := valueAt(p, model.NewPath(0, 0, 4)); !bytes.Equal(v.Bytes, der) {
		t.Error("/0/0/4 is not the server certificate's DER")
	}
	v, _ := valueAt(p, model.NewPath(0, 0, 5))
	if k, err := x509.ParsePKCS8PrivateKey(v.Bytes); err != nil || !key.Equal(k) {
		t.Errorf("/0/0/5 is not the key in PKCS #8: %v", err)
	}
	if m, _ := valueAt(p, model.NewPath(0, 0, 2)); m.Int != int64(lwm2m.SecurityCertificate) {
		t.Errorf("mode %v, want certificate", m)
	}
}

package coaps_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

const (
	testIdentity = "dev-psk"
	testKey      = "0123456789abcdef"
)

// pskServer starts a DTLS test server that knows one identity and key,
// offering only the suite LwM2M mandates, and Connection IDs. sawCID
// records whether the server's hello carried the connection_id extension,
// which it does only when the client offered it (RFC 9146 §3).
func pskServer(t *testing.T, sawCID *atomic.Bool) *lwm2mtest.DTLSServer {
	return lwm2mtest.StartDTLS(t,
		dtls.WithPSK(func(id []byte) ([]byte, error) {
			if string(id) != testIdentity {
				return nil, errors.New("unknown identity")
			}
			return []byte(testKey), nil
		}),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(8)),
		dtls.WithServerHelloMessageHook(func(m handshake.MessageServerHello) handshake.Message {
			for _, e := range m.Extensions {
				if _, ok := e.(*extension.ConnectionID); ok && sawCID != nil {
					sawCID.Store(true)
				}
			}
			return &m
		}),
	)
}

func newClient(t *testing.T, ep, uri string, tr lwm2m.Transport) *lwm2m.Client {
	t.Helper()
	c, err := lwm2m.New(lwm2m.Config{Endpoint: ep, Server: uri, Transport: tr, Logger: lwm2mtest.Logger(t),
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddObject(objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme"})); err != nil {
		t.Fatal(err)
	}
	return c
}

func dtlsConn(t *testing.T, cc *udpclient.Conn) *dtls.Conn {
	t.Helper()
	dc, ok := cc.NetConn().(*dtls.Conn)
	if !ok {
		t.Fatalf("server conn is %T, not DTLS", cc.NetConn())
	}
	return dc
}

func readManufacturer(t *testing.T, cc *udpclient.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := lwm2mtest.Do(ctx, cc, codes.GET, "/3/0/0", -1, nil,
		message.Option{ID: message.Accept, Value: []byte{0}}) // text/plain
	if err != nil {
		t.Fatalf("read /3/0/0: %v", err)
	}
	if resp.Code != codes.Content || string(resp.Payload) != "Acme" {
		t.Fatalf("read /3/0/0 = %v %q, want 2.05 \"Acme\"", resp.Code, resp.Payload)
	}
}

func TestRegisterPSK(t *testing.T) {
	var sawCID atomic.Bool
	s := pskServer(t, &sawCID)
	// One call sets up the transport and the Security object's credentials.
	lc := lwm2m.Config{Endpoint: "psk-ep", Server: s.URI(), Logger: lwm2mtest.Logger(t),
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	if err := coaps.Configure(&lc, coaps.Config{PSKIdentity: []byte(testIdentity), PSK: []byte(testKey)}); err != nil {
		t.Fatal(err)
	}
	c, err := lwm2m.New(lc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddObject(objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme"})); err != nil {
		t.Fatal(err)
	}
	run := lwm2mtest.RunClient(t, s.Server, c, "psk-ep")

	st, ok := dtlsConn(t, run.Conn()).ConnectionState()
	if !ok || st.CipherSuiteID != dtls.TLS_PSK_WITH_AES_128_CCM_8 {
		t.Errorf("suite = %v, want TLS_PSK_WITH_AES_128_CCM_8", dtls.CipherSuiteName(st.CipherSuiteID))
	}
	if string(st.IdentityHint) != testIdentity {
		t.Errorf("server saw identity %q, want %q", st.IdentityHint, testIdentity)
	}
	if !sawCID.Load() {
		t.Error("no Connection ID negotiated")
	}
	readManufacturer(t, run.Conn())
	if got := c.Credentials(); got.Mode != lwm2m.SecurityPSK || string(got.PublicKeyID) != testIdentity {
		t.Errorf("/0 credentials = %+v", got)
	}
}

// certPair makes a self-signed ECDSA P-256 certificate for 127.0.0.1.
func certPair(t *testing.T, cn string, parent *tls.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	signer, signerKey := tmpl, any(key)
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		signer, signerKey = parent.Leaf, parent.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func certServer(t *testing.T, cert tls.Certificate) *lwm2mtest.DTLSServer {
	return lwm2mtest.StartDTLS(t,
		dtls.WithCertificates(cert),
		dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
	)
}

func TestRegisterCertificate(t *testing.T) {
	serverCert := certPair(t, "lwm2m-server", nil)
	clientCert := certPair(t, "device-1", nil)
	s := certServer(t, serverCert)
	cfg := coaps.Config{Server: s.URI(), Certificate: &clientCert, ServerCertificate: serverCert.Certificate[0], Logger: lwm2mtest.Logger(t)}
	dial, err := coaps.NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "cert-ep", s.URI(), dial)
	run := lwm2mtest.RunClient(t, s.Server, c, "cert-ep")

	st, ok := dtlsConn(t, run.Conn()).ConnectionState()
	if !ok || st.CipherSuiteID != dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 {
		t.Errorf("suite = %v, want TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", dtls.CipherSuiteName(st.CipherSuiteID))
	}
	if len(st.PeerCertificates) == 0 || !bytes.Equal(st.PeerCertificates[0], clientCert.Certificate[0]) {
		t.Error("server did not receive the client certificate")
	}
	readManufacturer(t, run.Conn())
}

func TestRegisterTrustStore(t *testing.T) {
	ca := certPair(t, "test-ca", nil)
	serverCert := certPair(t, "lwm2m-server", &ca)
	clientCert := certPair(t, "device-1", nil)
	s := certServer(t, serverCert)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	dial, err := coaps.NewTransport(coaps.Config{Server: s.URI(), Certificate: &clientCert, RootCAs: roots, Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "ca-ep", s.URI(), dial)
	run := lwm2mtest.RunClient(t, s.Server, c, "ca-ep")
	readManufacturer(t, run.Conn())
}

// coapOver runs a CoAP client over a session from Transport.Dial, for
// tests that talk to a plain CoAP-over-DTLS server.
func coapOver(ctx context.Context, nc net.Conn) *udpclient.Conn {
	return coapdtls.Client(nc.(*dtls.Conn), options.WithContext(ctx), options.WithBlockwise(false, 0, 0))
}

func TestServerCertificateMismatch(t *testing.T) {
	serverCert := certPair(t, "lwm2m-server", nil)
	other := certPair(t, "impostor", nil)
	clientCert := certPair(t, "device-1", nil)
	s := certServer(t, serverCert)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cases := map[string]coaps.Config{
		"pinned":      {ServerCertificate: other.Certificate[0]},
		"trust store": {RootCAs: x509.NewCertPool()},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			cfg.Server, cfg.Certificate, cfg.Logger = s.URI(), &clientCert, lwm2mtest.Logger(t)
			cfg.HandshakeTimeout = 10 * time.Second
			dial, err := coaps.NewTransport(cfg)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := dial.Dial(ctx)
			if err == nil {
				cc.Close()
				t.Fatal("dial succeeded with a server certificate that does not match")
			}
			if !errors.Is(err, coaps.ErrCertificate) {
				t.Fatalf("err = %v, want ErrCertificate", err)
			}
		})
	}
}

func TestWrongPSK(t *testing.T) {
	s := pskServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cases := map[string]coaps.Config{
		"wrong key":        {PSKIdentity: []byte(testIdentity), PSK: []byte("not-the-key")},
		"unknown identity": {PSKIdentity: []byte("stranger"), PSK: []byte(testKey)},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			cfg.Server, cfg.Logger = s.URI(), lwm2mtest.Logger(t)
			cfg.HandshakeTimeout = 3 * time.Second
			dial, err := coaps.NewTransport(cfg)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := dial.Dial(ctx)
			if err == nil {
				cc.Close()
				t.Fatal("dial succeeded with a wrong PSK")
			}
			if !errors.Is(err, coaps.ErrPSKRejected) && !errors.Is(err, coaps.ErrTimeout) {
				t.Fatalf("err = %v, want ErrPSKRejected or ErrTimeout", err)
			}
			if !strings.Contains(err.Error(), "PSK") {
				t.Errorf("error does not mention the PSK: %v", err)
			}
			t.Logf("%s: %v", name, err)
		})
	}
}

func TestTransportConfig(t *testing.T) {
	key := []byte(testKey)
	for name, cfg := range map[string]coaps.Config{
		"plain scheme":    {Server: "coap://127.0.0.1:5684", PSKIdentity: []byte("a"), PSK: key},
		"no credentials":  {Server: "coaps://127.0.0.1:5684"},
		"psk without id":  {Server: "coaps://127.0.0.1:5684", PSK: key},
		"psk and cert":    {Server: "coaps://127.0.0.1:5684", PSKIdentity: []byte("a"), PSK: key, Certificate: &tls.Certificate{}},
		"no host":         {Server: "coaps:///rd", PSKIdentity: []byte("a"), PSK: key},
		"unparseable URI": {Server: "coaps://[::1", PSKIdentity: []byte("a"), PSK: key},
	} {
		if _, err := coaps.NewTransport(cfg); !errors.Is(err, coaps.ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
}

// Configure takes the server URI from the client's Config, refuses a
// different one, and fills in the transport and the credentials.
func TestConfigure(t *testing.T) {
	sec := coaps.Config{PSKIdentity: []byte("a"), PSK: []byte(testKey)}
	lc := lwm2m.Config{Endpoint: "e", Server: "coaps://127.0.0.1:5684"}
	if err := coaps.Configure(&lc, sec); err != nil {
		t.Fatal(err)
	}
	if lc.Transport == nil || lc.Credentials == nil || lc.Credentials.Mode != lwm2m.SecurityPSK ||
		string(lc.Credentials.PublicKeyID) != "a" {
		t.Errorf("Configure left Transport %v, Credentials %+v", lc.Transport, lc.Credentials)
	}
	sec.Server = "coaps://127.0.0.2:5684"
	if err := coaps.Configure(&lwm2m.Config{Server: "coaps://127.0.0.1:5684"}, sec); !errors.Is(err, coaps.ErrConfig) {
		t.Errorf("different server URIs: err = %v, want ErrConfig", err)
	}
	if err := coaps.Configure(&lwm2m.Config{Server: "coap://127.0.0.1"}, coaps.Config{PSKIdentity: []byte("a"), PSK: []byte(testKey)}); !errors.Is(err, coaps.ErrConfig) {
		t.Errorf("coap:// server: err = %v, want ErrConfig", err)
	}
}

func TestCredentialsRoundTrip(t *testing.T) {
	serverCert := certPair(t, "lwm2m-server", nil)
	clientCert := certPair(t, "device-1", nil)
	for name, cfg := range map[string]coaps.Config{
		"psk":  {Server: "coaps://h", PSKIdentity: []byte("id"), PSK: []byte("key")},
		"cert": {Server: "coaps://h", Certificate: &clientCert, ServerCertificate: serverCert.Certificate[0]},
	} {
		cr, err := coaps.Credentials(cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := coaps.FromCredentials(cfg.Server, cr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := coaps.Credentials(back)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if again.Mode != cr.Mode || !bytes.Equal(again.PublicKeyID, cr.PublicKeyID) ||
			!bytes.Equal(again.ServerKey, cr.ServerKey) || !bytes.Equal(again.SecretKey, cr.SecretKey) {
			t.Errorf("%s: round trip changed credentials: %+v -> %+v", name, cr, again)
		}
	}
	if cr, _ := coaps.Credentials(coaps.Config{PSKIdentity: []byte("id"), PSK: []byte("k")}); cr.Mode != lwm2m.SecurityPSK {
		t.Errorf("PSK mode = %d", cr.Mode)
	}
	if _, err := coaps.FromCredentials("coaps://h", lwm2m.Credentials{Mode: 1}); !errors.Is(err, coaps.ErrRPK) {
		t.Errorf("RPK: err = %v, want ErrRPK", err)
	}
	if _, err := coaps.FromCredentials("coap://h", lwm2m.Credentials{Mode: lwm2m.SecurityNoSec}); !errors.Is(err, coaps.ErrNoSec) {
		t.Errorf("NoSec: err = %v, want ErrNoSec", err)
	}
}

// Over DTLS too, a request larger than one MTU is read and answered, and
// the session survives it. go-coap's read buffer of one MTU made pion
// refuse the record (buffer too small), which ended the session.
func TestLargeRequestDTLS(t *testing.T) {
	s := pskServer(t, nil)
	dial, err := coaps.NewTransport(coaps.Config{Server: s.URI(), PSKIdentity: []byte(testIdentity), PSK: []byte(testKey), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, "big-ep", s.URI(), dial)
	notes := lwm2m.NewStatic(4101, "", lwm2m.Resource{ID: 0, Type: model.TypeString, Ops: lwm2m.OpRW})
	notes.Set(0, 0, model.String(""))
	if err := c.AddObject(notes); err != nil {
		t.Fatal(err)
	}
	run := lwm2mtest.RunClient(t, s.Server, c, "big-ep")
	v := strings.Repeat("d", 6000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := lwm2mtest.Do(ctx, run.Conn(), codes.PUT, "/4101/0/0", 0, []byte(v))
	if err != nil || r.Code != codes.Changed {
		t.Fatalf("6000-byte write over DTLS: %v %v, want 2.04", r.Code, err)
	}
	if got, _ := notes.Get(0, 0); got.Str != v {
		t.Fatalf("stored %d bytes, want 6000", len(got.Str))
	}
	readManufacturer(t, run.Conn())
}

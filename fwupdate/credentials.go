package fwupdate

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

// serverCredentials returns the LwM2M server account's credentials for a
// download from the same host and port, so that a server that hosts its
// own images needs no extra configuration (LwM2M 1.1 Core §E.1 credentials
// reused for the firmware server). It returns nil when they do not apply.
func serverCredentials(c *lwm2m.Client, packageURI string) *download.Security {
	pu, err1 := url.Parse(packageURI)
	su, err2 := url.Parse(c.ServerURI())
	if err1 != nil || err2 != nil || !strings.HasPrefix(pu.Scheme, "coaps") || su.Scheme != "coaps" {
		return nil
	}
	if coapuri.HostPort(pu) != coapuri.HostPort(su) {
		return nil
	}
	cr := c.Credentials()
	switch cr.Mode {
	case lwm2m.SecurityPSK:
		if len(cr.SecretKey) == 0 {
			return nil
		}
		return &download.Security{PSKIdentity: string(cr.PublicKeyID), PSK: cr.SecretKey}
	case lwm2m.SecurityCertificate:
		key, err := parseKey(cr.SecretKey)
		if err != nil || len(cr.PublicKeyID) == 0 {
			return nil
		}
		// The server is pinned as the LwM2M connection pins it (/0/x/4).
		return &download.Security{
			Certificates:      []tls.Certificate{{Certificate: [][]byte{cr.PublicKeyID}, PrivateKey: key}},
			ServerCertificate: cr.ServerKey,
		}
	}
	return nil
}

func parseKey(der []byte) (crypto.PrivateKey, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("fwupdate: unrecognised private key")
}

// noCredentials reports a secure CoAP download with nothing to secure it
// with: Unsupported protocol (Result 9), docs/FIRMWARE_UPDATE.md "Pull".
func noCredentials(packageURI string, sec *download.Security) bool {
	u, err := url.Parse(packageURI)
	if err != nil || !strings.HasPrefix(strings.ToLower(u.Scheme), "coaps") {
		return false
	}
	return sec == nil || (len(sec.PSK) == 0 && len(sec.Certificates) == 0 && sec.RootCAs == nil && len(sec.ServerCertificate) == 0)
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
)

// credFlags are the DTLS and TLS credential flags that lwm2m client and
// lwm2m download share, with the same names and meaning.
type credFlags struct {
	pskID, pskHex, certFile, keyFile, serverCert *string
}

// addCredFlags registers the flags on fs; usage texts name the schemes
// each flag serves in that command.
func addCredFlags(fs *flag.FlagSet, pskUse, certUse string) credFlags {
	return credFlags{
		pskID:      fs.String("psk-identity", "", "DTLS PSK `identity` "+pskUse),
		pskHex:     fs.String("psk-key", "", "DTLS PSK as `HEX` "+pskUse),
		certFile:   fs.String("cert", "", "client certificate PEM `FILE` "+certUse),
		keyFile:    fs.String("key", "", "client private key PEM `FILE`"),
		serverCert: fs.String("server-cert", "", "server certificate `FILE` (PEM or DER) to pin"),
	}
}

// creds are the credentials the flags name, loaded and decoded.
type creds struct {
	pskID []byte
	psk   []byte
	cert  *tls.Certificate
	pin   []byte // DER of the pinned server certificate
}

func (f credFlags) set() bool {
	return *f.pskID != "" || *f.pskHex != "" || *f.certFile != "" || *f.keyFile != "" || *f.serverCert != ""
}

// load decodes the PSK and reads the certificate files.
func (f credFlags) load() (creds, error) {
	c := creds{pskID: []byte(*f.pskID)}
	if *f.pskHex != "" {
		psk, err := hex.DecodeString(*f.pskHex)
		if err != nil || len(psk) == 0 {
			return c, errors.New("-psk-key: want hex digits")
		}
		c.psk = psk
	}
	if (*f.certFile == "") != (*f.keyFile == "") {
		return c, errors.New("-cert and -key go together")
	}
	if *f.certFile != "" {
		cert, err := tls.LoadX509KeyPair(*f.certFile, *f.keyFile)
		if err != nil {
			return c, fmt.Errorf("-cert/-key: %w", err)
		}
		c.cert = &cert
	}
	if *f.serverCert != "" {
		der, err := coaps.LoadServerCertificate(*f.serverCert)
		if err != nil {
			return c, fmt.Errorf("-server-cert: %w", err)
		}
		c.pin = der
	}
	return c, nil
}

// fwCredFlags are lwm2m client's credentials for pull downloads (coaps,
// coaps+tcp, https), apart from the LwM2M server's; the names follow
// Anjay's demo (--fw-psk-identity, --fw-psk-key, --fw-cert-file).
type fwCredFlags struct {
	pskID, pskHex, certFile, keyFile, caFile *string
}

func addFwCredFlags(fs *flag.FlagSet) fwCredFlags {
	return fwCredFlags{
		pskID:    fs.String("fw-psk-identity", "", "DTLS PSK `identity` for coaps package downloads"),
		pskHex:   fs.String("fw-psk-key", "", "DTLS PSK as `HEX` for coaps package downloads"),
		certFile: fs.String("fw-cert", "", "client certificate PEM `FILE` for package downloads (coaps, coaps+tcp, https)"),
		keyFile:  fs.String("fw-key", "", "client private key PEM `FILE` that goes with -fw-cert"),
		caFile:   fs.String("fw-ca", "", "PEM `FILE` of CAs that sign the package server's certificate (default: system roots)"),
	}
}

// security returns the download credentials the flags name, nil if none.
// Every error is a usage error.
func (f fwCredFlags) security() (*download.Security, error) {
	psk := *f.pskID != "" || *f.pskHex != ""
	cert := *f.certFile != "" || *f.keyFile != ""
	switch {
	case !psk && !cert && *f.caFile == "":
		return nil, nil
	case psk && (*f.pskID == "" || *f.pskHex == ""):
		return nil, errors.New("-fw-psk-identity and -fw-psk-key go together")
	case cert && (*f.certFile == "" || *f.keyFile == ""):
		return nil, errors.New("-fw-cert and -fw-key go together")
	case psk && cert:
		// coaps would have to pick one of them silently.
		return nil, errors.New("give -fw-psk-identity/-fw-psk-key or -fw-cert/-fw-key, not both")
	}
	sec := &download.Security{PSKIdentity: *f.pskID}
	if psk {
		key, err := hex.DecodeString(*f.pskHex)
		if err != nil || len(key) == 0 {
			return nil, errors.New("-fw-psk-key: want hex digits")
		}
		sec.PSK = key
	}
	if cert {
		c, err := tls.LoadX509KeyPair(*f.certFile, *f.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-fw-cert/-fw-key: %w", err)
		}
		sec.Certificates = []tls.Certificate{c}
	}
	if *f.caFile != "" {
		pool, err := loadCAs(*f.caFile)
		if err != nil {
			return nil, fmt.Errorf("-fw-ca: %w", err)
		}
		sec.RootCAs = pool
	}
	return sec, nil
}

// loadCAs reads a PEM file of CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificates in %s", path)
	}
	return pool, nil
}

// fwSecured gives the device's handlers download credentials through
// fwupdate.SecurityConfigurer. The embedded device keeps its other
// capabilities (Resumer, PackageInfo), which fwupdate discovers on it.
type fwSecured struct {
	*fileDevice
	sec *download.Security
}

func (h fwSecured) SecurityConfig(string) (*download.Security, error) { return h.sec, nil }

// withFwCredentials returns the handlers for fwupdate.Install: dev itself
// when no -fw-* credentials were given, so that a download from the LwM2M
// server's own host uses the server's credentials.
func withFwCredentials(dev *fileDevice, sec *download.Security) fwupdate.Handlers {
	if sec == nil {
		return dev
	}
	return fwSecured{dev, sec}
}

package main

import (
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"

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

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
)

// provisioningFile holds, under -state-dir, the Security, Server and
// Access Control instances that bootstrap provisioned (with their keys:
// mode 0600).
const provisioningFile = "provisioning.json"

// bootstrapConfig sets up bootstrap from -bootstrap or -config: the
// provisioning store in the state directory, the bootstrap server's
// account or the factory configuration, and DTLS for whatever coaps://
// account bootstrap provisions.
func bootstrapConfig(cfg *lwm2m.Config, bsURI, factory, stateDir string, cred credFlags, log *slog.Logger) error {
	if bsURI == "" && factory == "" {
		return nil
	}
	switch {
	case bsURI != "" && factory != "":
		return errors.New("-bootstrap and -config: give one (the factory file names the bootstrap server)")
	case cfg.Server != "" && factory != "":
		return errors.New("-server and -config: give one (the factory file names the servers)")
	}
	cfg.TransportFor = coaps.TransportFor(log)
	cfg.ProvisioningStore = lwm2m.NewFileProvisioningStore(filepath.Join(stateDir, provisioningFile))
	if factory != "" {
		if cred.set() {
			return errors.New("-config: the keys go in the factory file, not in -psk-identity, -psk-key, -cert or -key")
		}
		p, err := lwm2m.ReadFactoryFile(factory)
		if err != nil {
			return fmt.Errorf("-config: %w", err)
		}
		cfg.Provisioning = &p
		return nil
	}
	u, err := url.Parse(bsURI)
	if err != nil || u.Host == "" || (u.Scheme != "coap" && u.Scheme != "coaps") {
		return fmt.Errorf("-bootstrap %q: want coap://HOST:PORT or coaps://HOST:PORT", bsURI)
	}
	cfg.Bootstrap = bsURI
	if u.Scheme == "coap" {
		if cred.set() && !strings.HasPrefix(cfg.Server, "coaps:") {
			return errors.New("-psk-identity, -psk-key, -cert and -key are for a coaps:// server or bootstrap server")
		}
		return nil
	}
	if strings.HasPrefix(cfg.Server, "coaps:") {
		return errors.New("-server and -bootstrap are both coaps://: the flags hold one set of credentials; use -config for two")
	}
	sec, err := secureConfig(cred)
	if err != nil {
		return fmt.Errorf("-bootstrap: %w", err)
	}
	cr, err := coaps.Credentials(sec)
	if err != nil {
		return fmt.Errorf("-bootstrap: %w", err)
	}
	cfg.BootstrapCredentials = &cr
	return nil
}

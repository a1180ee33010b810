package coaps

import "github.com/lwm2m-fota/lwm2m/lwm2m"

// Transports returns the lwm2m.TransportFunc for lwm2m.Config.Transports:
// it builds the DTLS transport of each coaps:// account (a bootstrap
// server, or an LwM2M server that bootstrap provisioned) from the
// credentials of its Security instance, as FromCredentials does. The
// settings that the Security object does not hold (timeouts, logger,
// trust roots, Connection IDs) come from base; its Server and
// credentials are ignored.
func Transports(base Config) lwm2m.TransportFunc {
	return func(uri string, cr lwm2m.Credentials) (lwm2m.Transport, error) {
		cfg, err := FromCredentials(uri, cr)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs, cfg.ServerName = base.RootCAs, base.ServerName
		cfg.DisableConnectionID = base.DisableConnectionID
		cfg.HandshakeTimeout, cfg.FlightInterval = base.HandshakeTimeout, base.FlightInterval
		cfg.Logger = base.Logger
		return NewTransport(cfg)
	}
}

package coaps

// TEMPORARY: the same function as helper sessions' TransportFor in
// coaps.go; DELETE THIS FILE AT THE MERGE.

import (
	"log/slog"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

// TransportFor returns a function for lwm2m.Config.TransportFor that
// builds each coaps account's transport from its URI and the credentials
// of its Security instance (FromCredentials).
func TransportFor(log *slog.Logger) func(serverURI string, cr lwm2m.Credentials) (lwm2m.Transport, error) {
	return func(serverURI string, cr lwm2m.Credentials) (lwm2m.Transport, error) {
		cfg, err := FromCredentials(serverURI, cr)
		if err != nil {
			return nil, err
		}
		cfg.Logger = log
		return NewTransport(cfg)
	}
}

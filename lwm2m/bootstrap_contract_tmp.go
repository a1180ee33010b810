package lwm2m

// TEMPORARY: a copy of Contract A until helper sessions' lwm2m/provision.go
// is merged. DELETE THIS FILE AT THE MERGE.

import (
	"context"
	"errors"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Provisioning is the configuration of the client's server accounts: the
// instances of Security (/0), Server (/1) and Access Control (/2),
// resource by resource. Records are sorted by path; multiple resources
// (the ACL) have one record per resource instance.
type Provisioning struct{ Records []model.Record }

// ProvisioningStore keeps a Provisioning across restarts. Save is atomic:
// after a crash, Load returns the old configuration or the new one.
type ProvisioningStore interface {
	Load(ctx context.Context) (Provisioning, error) // ErrNotProvisioned if nothing saved
	Save(ctx context.Context, p Provisioning) error
}

// ErrNotProvisioned is Load's error when nothing was ever saved.
var ErrNotProvisioned = errors.New("lwm2m: not provisioned")

package fwupdate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/atomicfile"
)

// Persisted is what the module keeps across reboots so that the State and
// Update Result reported after a restart are the true ones.
type Persisted struct {
	State  State  `json:"state"`
	Result Result `json:"result"`
	// URI, ETag and Offset let an interrupted pull resume. URI is empty
	// for a push, which cannot resume.
	URI    string `json:"uri,omitempty"`
	ETag   []byte `json:"etag,omitempty"`
	Offset int64  `json:"offset,omitempty"`
	// PkgName and PkgVersion describe a Downloaded or Updating package.
	PkgName    string `json:"pkg_name,omitempty"`
	PkgVersion string `json:"pkg_version,omitempty"`
	// Object 1.1 settings and bookkeeping.
	Severity        int       `json:"severity"`
	MaxDeferPeriod  uint32    `json:"max_defer_period,omitempty"`
	LastStateChange time.Time `json:"last_state_change,omitzero"`
}

// Store keeps Persisted across reboots. Save must be atomic: after a crash
// at any moment, Load returns either the old or the new value.
type Store interface {
	Load() (Persisted, error)
	Save(Persisted) error
}

// ErrNoState is returned by Load when nothing was saved yet.
var ErrNoState = errors.New("fwupdate: no saved state")

// FileStore is a Store in one JSON file. Save writes a temporary file,
// syncs it, renames it over the old one and syncs the directory, so a
// crash leaves either version whole.
type FileStore struct {
	Path string
}

func (s FileStore) Load() (Persisted, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return Persisted{Severity: SeverityMandatory}, ErrNoState
	}
	if err != nil {
		return Persisted{}, fmt.Errorf("fwupdate: load state: %w", err)
	}
	var p Persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return Persisted{}, fmt.Errorf("fwupdate: load state %s: %w", s.Path, err)
	}
	if p.State < StateIdle || p.State > StateUpdating || p.Result < ResultInitial || p.Result > ResultDeferred {
		return Persisted{}, fmt.Errorf("fwupdate: load state %s: state %d or result %d out of range", s.Path, p.State, p.Result)
	}
	return p, nil
}

func (s FileStore) Save(p Persisted) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.Path, b, 0o600)
}

// MemoryStore is a Store held in memory, for tests and for devices that
// keep no state.
type MemoryStore struct {
	p     Persisted
	saved bool
}

func (m *MemoryStore) Load() (Persisted, error) {
	if !m.saved {
		return Persisted{Severity: SeverityMandatory}, ErrNoState
	}
	return m.p, nil
}

func (m *MemoryStore) Save(p Persisted) error {
	m.p, m.saved = p, true
	return nil
}

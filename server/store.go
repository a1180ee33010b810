package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Registration is what the server knows about one registered LwM2M client
// (LwM2M 1.1 Core, 6.2.1; Transport, 5.3). It is stored as JSON.
type Registration struct {
	ID       string `json:"id"`       // the rd/<ID> Location-Path the server assigned
	Endpoint string `json:"endpoint"` // ep
	Lifetime int64  `json:"lifetime"` // lt, in seconds
	Binding  string `json:"binding"`  // b, "U" by default
	Version  string `json:"version"`  // lwm2m, "1.0" by default
	Links    string `json:"links"`    // the CoRE link-format payload: objects and instances
	Addr     string `json:"addr"`     // the client's UDP address, host:port
	// Local is the server's address the device sent its last Register or
	// Update to, host:port. On a wildcard bind it is the concrete
	// address, which keys go-coap's connection to the device and which
	// the server's requests come from.
	Local string `json:"local,omitempty"`
	// Secure is set when the device registered over DTLS (coaps); the
	// server then reaches it only over that DTLS session.
	Secure bool `json:"secure,omitempty"`
	// PSKIdentity is the DTLS session's PSK identity.
	PSKIdentity string `json:"psk_identity,omitempty"`

	// Queue is set for a device in queue mode (the Register's Q
	// parameter, or a 1.0 binding such as "UQ"): it sleeps between its
	// exchanges, and operations wait for it (see Server.QueueWindow).
	Queue bool `json:"queue,omitempty"`

	Registered time.Time `json:"registered"`
	Updated    time.Time `json:"updated"` // last Register or Update
	// LastSeen is when the device last sent anything the server
	// noticed: a Register, an Update, a Send, a notification or an answer.
	LastSeen time.Time `json:"last_seen"`
}

// Expires returns when the registration lapses, without the server's grace.
func (r Registration) Expires() time.Time {
	return r.Updated.Add(time.Duration(r.Lifetime) * time.Second)
}

// Store keeps registrations across restarts. Implementations must be safe
// for concurrent use.
type Store interface {
	Put(r Registration) error
	Delete(id string) error
	List() ([]Registration, error)
	Close() error
}

// BindingStore is a Store that also keeps which DTLS identity each
// endpoint is bound to, beyond the life of its registrations. The server
// discovers it on its Store; without it bindings last until restart,
// except those of the registrations the Store lists.
type BindingStore interface {
	// PutBinding binds endpoint ep to a DTLS identity.
	PutBinding(ep, identity string) error
	// Bindings returns every endpoint's identity.
	Bindings() (map[string]string, error)
}

// MemoryStore is a Store that forgets everything when the process exits.
type MemoryStore struct {
	mu       sync.Mutex
	regs     map[string]Registration
	bindings map[string]string
}

// PutBinding binds ep to identity.
func (m *MemoryStore) PutBinding(ep, identity string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bindings == nil {
		m.bindings = make(map[string]string)
	}
	m.bindings[ep] = identity
	return nil
}

// Bindings returns a copy of the bindings.
func (m *MemoryStore) Bindings() (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.bindings))
	for k, v := range m.bindings {
		out[k] = v
	}
	return out, nil
}

// Put stores r under r.ID.
func (m *MemoryStore) Put(r Registration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.regs == nil {
		m.regs = make(map[string]Registration)
	}
	m.regs[r.ID] = r
	return nil
}

// Delete removes the registration id; a missing id is not an error.
func (m *MemoryStore) Delete(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.regs, id)
	return nil
}

// List returns all registrations ordered by endpoint.
func (m *MemoryStore) List() ([]Registration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Registration, 0, len(m.regs))
	for _, r := range m.regs {
		out = append(out, r)
	}
	sortRegs(out)
	return out, nil
}

// Close does nothing.
func (m *MemoryStore) Close() error { return nil }

func sortRegs(rs []Registration) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Endpoint < rs[j].Endpoint })
}

var (
	bucketRegs     = []byte("registrations")
	bucketBindings = []byte("bindings") // endpoint -> DTLS identity
)

// BoltStore is a Store in a bbolt database file.
type BoltStore struct {
	db *bolt.DB
}

// OpenBoltStore opens or creates the database at path. bbolt locks the
// file, so a second server on the same file fails here rather than
// corrupting it.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("server: open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketRegs); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketBindings)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("server: init store %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Put stores r under r.ID.
func (b *BoltStore) Put(r Registration) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRegs).Put([]byte(r.ID), data)
	})
}

// Delete removes the registration id; a missing id is not an error.
func (b *BoltStore) Delete(id string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRegs).Delete([]byte(id))
	})
}

// List returns all registrations ordered by endpoint. Records that do not
// decode are skipped with an error joined to the result.
func (b *BoltStore) List() ([]Registration, error) {
	var out []Registration
	var errs []error
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRegs).ForEach(func(k, v []byte) error {
			var r Registration
			if err := json.Unmarshal(v, &r); err != nil {
				errs = append(errs, fmt.Errorf("server: registration %q: %w", k, err))
				return nil
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sortRegs(out)
	return out, errors.Join(errs...)
}

// PutBinding binds ep to identity.
func (b *BoltStore) PutBinding(ep, identity string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBindings).Put([]byte(ep), []byte(identity))
	})
}

// Bindings returns every endpoint's identity.
func (b *BoltStore) Bindings() (map[string]string, error) {
	out := map[string]string{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBindings).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	return out, err
}

// Close closes the database.
func (b *BoltStore) Close() error { return b.db.Close() }

// DB returns the database, for packages that keep buckets of their own
// in the same file (server/bootstrap's history): bbolt locks the file,
// so one process cannot open it twice. Its buckets other than
// "registrations" and "bindings" are theirs.
func (b *BoltStore) DB() *bolt.DB { return b.db }

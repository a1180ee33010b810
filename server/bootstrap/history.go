package bootstrap

import (
	"container/list"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Outcomes of a bootstrap attempt.
const (
	// Finished: the device accepted every write and Bootstrap-Finish.
	Finished = "finished"
	// Failed: the device refused an operation (its code and diagnostic
	// are in Error), or the connection broke.
	Failed = "failed"
	// Abandoned: the device stopped answering, and the server gave up
	// after Server.Timeout or RequestTimeout.
	Abandoned = "abandoned"
	// Refused: the server refused the Bootstrap-Request (Code says how):
	// an unknown endpoint, a PSK identity that does not match, or too
	// many bootstraps at once.
	Refused = "refused"
)

// Attempt is one Bootstrap-Request and what came of it. It holds no key.
type Attempt struct {
	Endpoint    string    `json:"endpoint"`
	Started     time.Time `json:"started"`
	Ended       time.Time `json:"ended"`
	Peer        string    `json:"peer"`                   // the device's address, host:port
	Transport   string    `json:"transport"`              // "coap" or "coaps"
	PSKIdentity string    `json:"psk_identity,omitempty"` // of the DTLS session
	Format      string    `json:"format,omitempty"`       // content format of the writes
	Outcome     string    `json:"outcome"`                // Finished, Failed, Abandoned or Refused
	Code        string    `json:"code,omitempty"`         // the answer to the Bootstrap-Request when not 2.04
	Steps       []Step    `json:"steps,omitempty"`        // what the server sent, in order
	Error       string    `json:"error,omitempty"`
}

// Step is one request the bootstrap server sent to the device.
type Step struct {
	Op   string `json:"op"`             // "delete", "write" or "finish"
	Path string `json:"path"`           // "/0", "/0/1", "/bs" ...
	What string `json:"what,omitempty"` // what a write holds, keys left out
	Code string `json:"code,omitempty"` // the device's answer, "2.04" or "RST"; empty if none came
}

// Summary is the latest attempt of an endpoint and how many the history
// holds.
type Summary struct {
	Latest   Attempt `json:"latest"`
	Attempts int     `json:"attempts"`
}

// Bounds of a History.
const (
	// DefaultAttemptsPerEndpoint is how many attempts a History keeps
	// per endpoint; older ones are dropped.
	DefaultAttemptsPerEndpoint = 20
	// DefaultHistoryEndpoints is how many endpoints a History keeps;
	// beyond it the endpoint whose latest attempt was recorded longest
	// ago is dropped, so that requests under made-up names cannot grow
	// it without bound.
	DefaultHistoryEndpoints = 10000
)

var bucketHistory = []byte("bootstrap_history")

// History keeps the bootstrap attempts of each endpoint, bounded, in
// memory and, when opened on a bbolt database, in its bucket
// "bootstrap_history" (one JSON list per endpoint). Writes to the
// database are batched on a goroutine of their own, so that a flood of
// requests costs one transaction per batch, not one each.
type History struct {
	db     *bolt.DB
	perEP  int
	maxEPs int
	mu     sync.Mutex
	eps    map[string][]Attempt
	// order holds the endpoint names, the one recorded longest ago
	// first, and elems their elements: a flood of made-up names evicts
	// in constant time, not with a scan of every endpoint per request.
	order    *list.List
	elems    map[string]*list.Element
	dirty    map[string]bool
	kick     chan struct{}
	stop     chan struct{}
	finished chan struct{}
	closed   bool
	err      error // the last write error, reported by Close
}

// NewHistory returns a History in memory only.
func NewHistory() *History {
	h, _ := OpenHistory(nil)
	return h
}

// OpenHistory returns a History kept in db (nil: in memory only), with
// what db holds already. The caller closes the History before db.
func OpenHistory(db *bolt.DB) (*History, error) {
	h := &History{db: db, perEP: DefaultAttemptsPerEndpoint, maxEPs: DefaultHistoryEndpoints,
		eps: map[string][]Attempt{}, dirty: map[string]bool{}, order: list.New(), elems: map[string]*list.Element{}}
	if db == nil {
		return h, nil
	}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketHistory)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var as []Attempt
			if json.Unmarshal(v, &as) != nil || len(as) == 0 {
				return nil // a damaged record: start that endpoint afresh
			}
			h.eps[string(k)] = as
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bootstrap: history: %w", err)
	}
	h.orderByLatest()
	h.kick = make(chan struct{}, 1)
	h.stop = make(chan struct{})
	h.finished = make(chan struct{})
	go h.writer()
	return h, nil
}

// Add records a.
func (h *History) Add(a Attempt) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	as, known := h.eps[a.Endpoint]
	if !known && len(h.eps) >= h.maxEPs {
		h.evictLocked()
	}
	as = append(as, a)
	if len(as) > h.perEP {
		as = append([]Attempt(nil), as[len(as)-h.perEP:]...)
	}
	h.eps[a.Endpoint] = as
	if e, ok := h.elems[a.Endpoint]; ok {
		h.order.MoveToBack(e)
	} else {
		h.elems[a.Endpoint] = h.order.PushBack(a.Endpoint)
	}
	h.markLocked(a.Endpoint)
}

// evictLocked drops the endpoint whose latest attempt was recorded
// longest ago.
func (h *History) evictLocked() {
	e := h.order.Front()
	if e == nil {
		return
	}
	victim := h.order.Remove(e).(string)
	delete(h.elems, victim)
	delete(h.eps, victim)
	h.markLocked(victim)
}

// orderByLatest orders the endpoints loaded from the database by their
// latest attempt's start, the oldest first.
func (h *History) orderByLatest() {
	eps := make([]string, 0, len(h.eps))
	for ep := range h.eps {
		eps = append(eps, ep)
	}
	sort.Slice(eps, func(i, j int) bool {
		a, b := h.eps[eps[i]], h.eps[eps[j]]
		return a[len(a)-1].Started.Before(b[len(b)-1].Started)
	})
	for _, ep := range eps {
		h.elems[ep] = h.order.PushBack(ep)
	}
}

func (h *History) markLocked(ep string) {
	if h.db == nil {
		return
	}
	h.dirty[ep] = true
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Endpoint returns ep's attempts, oldest first.
func (h *History) Endpoint(ep string) []Attempt {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Attempt(nil), h.eps[ep]...)
}

// Summaries returns every endpoint's latest attempt, by endpoint name.
func (h *History) Summaries() []Summary {
	h.mu.Lock()
	out := make([]Summary, 0, len(h.eps))
	for _, as := range h.eps {
		out = append(out, Summary{Latest: as[len(as)-1], Attempts: len(as)})
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Latest.Endpoint < out[j].Latest.Endpoint })
	return out
}

// writer writes the endpoints marked dirty, in one transaction a batch.
func (h *History) writer() {
	defer close(h.finished)
	for {
		select {
		case <-h.kick:
			h.flush()
		case <-h.stop:
			h.flush()
			return
		}
	}
}

func (h *History) flush() {
	h.mu.Lock()
	if len(h.dirty) == 0 {
		h.mu.Unlock()
		return
	}
	batch := make(map[string][]byte, len(h.dirty))
	for ep := range h.dirty {
		if as, ok := h.eps[ep]; ok {
			b, err := json.Marshal(as)
			if err != nil {
				continue
			}
			batch[ep] = b
		} else {
			batch[ep] = nil
		}
	}
	h.dirty = map[string]bool{}
	h.mu.Unlock()
	err := h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHistory)
		for ep, v := range batch {
			var err error
			if v == nil {
				err = b.Delete([]byte(ep))
			} else {
				err = b.Put([]byte(ep), v)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Not written: the next flush tries these endpoints again, so
		// that one failed write does not leave the file stale for good.
		h.mu.Lock()
		h.err = err
		for ep := range batch {
			h.dirty[ep] = true
		}
		h.mu.Unlock()
	}
}

// Close writes what is pending and stops the History's goroutine; it
// leaves the database open. Add does nothing after it.
func (h *History) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	if h.db == nil {
		return nil
	}
	close(h.stop)
	<-h.finished
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return fmt.Errorf("bootstrap: history: %w", h.err)
	}
	return nil
}

package bootstrap

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lwm2m-fota/lwm2m/server"
)

// openTestHistory opens a History on a fresh bbolt file, with put applied
// to its bucket first.
func openTestHistory(t *testing.T, name string, put func(b *bolt.Bucket) error) (*History, *server.BoltStore) {
	t.Helper()
	st, err := server.OpenBoltStore(name)
	if err != nil {
		t.Fatal(err)
	}
	if put != nil {
		if err := st.DB().Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketHistory)
			if err != nil {
				return err
			}
			return put(b)
		}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := OpenHistory(st.DB())
	if err != nil {
		t.Fatal(err)
	}
	return h, st
}

// A record holding an empty list (a damaged or hand-edited database) is
// skipped like any other damaged one: before, Summaries (the history API)
// panicked on it, and so did the eviction of the next made-up name.
func TestHistoryEmptyRecord(t *testing.T) {
	h, st := openTestHistory(t, filepath.Join(t.TempDir(), "server.db"), func(b *bolt.Bucket) error {
		return b.Put([]byte("empty"), []byte("[]"))
	})
	defer st.Close()
	defer h.Close()
	h.maxEPs = 1
	if n := len(h.Summaries()); n != 0 {
		t.Fatalf("%d summaries of an empty record", n)
	}
	h.Add(Attempt{Endpoint: "x", Started: time.Unix(1e9, 0), Outcome: Refused})
	if sums := h.Summaries(); len(sums) != 1 || sums[0].Latest.Endpoint != "x" {
		t.Fatalf("summaries %+v", sums)
	}
}

// After a restart the endpoint whose latest attempt is oldest is still
// the first to go, whatever order the database lists them in.
func TestHistoryEvictionOrderAfterReopen(t *testing.T) {
	name := filepath.Join(t.TempDir(), "server.db")
	t0 := time.Unix(1e9, 0)
	h, st := openTestHistory(t, name, nil)
	// Database order (by name) differs from age order.
	for i, ep := range []string{"c", "a", "b"} {
		h.Add(Attempt{Endpoint: ep, Started: t0.Add(time.Duration(i) * time.Second), Outcome: Finished})
	}
	h.Close()
	st.Close()
	h, st = openTestHistory(t, name, nil)
	defer st.Close()
	defer h.Close()
	h.maxEPs = 3
	h.Add(Attempt{Endpoint: "new", Started: t0.Add(time.Minute), Outcome: Refused})
	if len(h.Endpoint("c")) != 0 || len(h.Endpoint("a")) == 0 || len(h.Endpoint("b")) == 0 {
		t.Fatalf("after one eviction: %+v", h.Summaries())
	}
}

// A flood of made-up endpoint names at a full history: each request used
// to scan all DefaultHistoryEndpoints endpoints under the history's lock
// (some 160 µs each, 6000 requests a second pinned a core); now eviction
// is constant time.
func BenchmarkHistoryAddFlood(b *testing.B) {
	h := NewHistory()
	t0 := time.Unix(1e9, 0)
	for i := range DefaultHistoryEndpoints {
		h.Add(Attempt{Endpoint: fmt.Sprint("ep", i), Started: t0.Add(time.Duration(i))})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Add(Attempt{Endpoint: fmt.Sprint("flood", i), Started: t0.Add(time.Hour + time.Duration(i)), Outcome: Refused})
	}
}

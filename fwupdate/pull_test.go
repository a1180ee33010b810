package fwupdate_test

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/dnstest"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

// countingHandlers are bufHandlers that count StreamWrite calls and
// remember the largest chunk.
type countingHandlers struct {
	bufHandlers
	calls, largest atomic.Int64
}

func (c *countingHandlers) StreamWrite(p []byte) error {
	c.calls.Add(1)
	if n := int64(len(p)); n > c.largest.Load() {
		c.largest.Store(n)
	}
	return c.bufHandlers.StreamWrite(p)
}

// offsetStore records every persisted resume offset, and checks that none
// is beyond what the handlers have been given at that moment.
type offsetStore struct {
	fwupdate.MemoryStore
	mu    sync.Mutex
	h     *countingHandlers
	last  int64
	ahead []int64 // offsets persisted ahead of the handlers
}

func (s *offsetStore) Save(p fwupdate.Persisted) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.Offset > s.h.written.Load() {
		s.ahead = append(s.ahead, p.Offset)
	}
	s.last = p.Offset
	return s.MemoryStore.Save(p)
}

func (s *offsetStore) lastOffset() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// A pull reaches StreamWrite block by block as the blocks arrive, also for
// a package smaller than any batch, and Suspend persists exactly the bytes
// the handlers hold (docs/FIRMWARE_UPDATE.md: "each block, in order,
// exactly once").
func TestPullStreamWritePerBlock(t *testing.T) {
	img := image(10*1024+5, 21)
	var held atomic.Bool
	held.Store(true)
	uri, _ := gatedBlockServer(t, img, []byte("e"), func(num int64) bool { return held.Load() && num >= 5 })
	srv := lwm2mtest.Start(t, "")
	h := &countingHandlers{}
	store := &offsetStore{h: h}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "perblock", Server: srv.URI(), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	req := download.Request{Retries: 1, RetryDelay: 50 * time.Millisecond, Timeout: 5 * time.Second,
		Tx: download.TxParams{AckTimeout: 50 * time.Millisecond, AckRandomFactor: 1, MaxRetransmit: 8}}
	obj, err := fwupdate.Install(c, h, fwupdate.Config{Store: store, Download: req, Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	run := lwm2mtest.RunClient(t, srv, c, "perblock")
	writeURI(t, run, uri)
	// Blocks 0-4 come at once; block 5 is held back.
	waitfor.Until(t, 10*time.Second, func() error {
		if h.written.Load() < 5*1024 {
			return fmt.Errorf("while block 5 is held back the handlers got %d bytes in %d calls, want 5120 in 5", h.written.Load(), h.calls.Load())
		}
		return nil
	})
	if n := h.calls.Load(); n != 5 {
		t.Errorf("StreamWrite called %d times for 5 blocks", n)
	}
	obj.Suspend()
	if got := store.lastOffset(); got != 5*1024 {
		t.Errorf("Suspend persisted offset %d, the handlers hold %d", got, h.written.Load())
	}
	held.Store(false)
	obj.Reconnect()
	waitObj(t, obj, fwupdate.StateDownloaded, fwupdate.ResultInitial)
	if h.sum() != sha256.Sum256(img) {
		t.Fatal("image differs")
	}
	if n, l := h.calls.Load(), h.largest.Load(); n != 11 || l != 1024 {
		t.Errorf("StreamWrite: %d calls, largest %d bytes; want 11 of at most 1024", n, l)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.ahead) > 0 {
		t.Errorf("offsets %v persisted ahead of the handlers", store.ahead)
	}
}

// A Package URI whose host does not exist gives Invalid URI (7) at once,
// as Anjay does, not Connection lost after the retries; a resolver that
// fails for now is a lost connection (4).
func TestPullUnresolvableHost(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rcode  byte
		result fwupdate.Result
	}{
		{"nxdomain", dnstest.NXDomain, fwupdate.ResultInvalidURI},
		{"servfail", dnstest.ServFail, fwupdate.ResultConnectionLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, queries := dnstest.Resolver(tc.rcode)
			srv := lwm2mtest.Start(t, "")
			c, err := lwm2m.New(lwm2m.Config{Endpoint: "dns-" + tc.name, Server: srv.URI(), Logger: lwm2mtest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			req := downloadRequest()
			req.Resolver = r
			req.Retries, req.RetryDelay = 2, 10*time.Millisecond
			obj, err := fwupdate.Install(c, &bufHandlers{}, fwupdate.Config{Download: req, Logger: lwm2mtest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			run := lwm2mtest.RunClient(t, srv, c, "dns-"+tc.name)
			writeURI(t, run, "coap://fw.nowhere.test/fw")
			waitObj(t, obj, fwupdate.StateIdle, tc.result)
			if queries.Load() == 0 {
				t.Error("the injected resolver was not asked")
			}
		})
	}
}

package reliability_test

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// 100k malformed requests leave the heap flat: nothing is kept per request.
// Under -race the flood is 25k so the folder stays quick; run without
// -race for the full 100k (docs/RELIABILITY.md has both figures).
func TestFloodMemory(t *testing.T) {
	total := 100_000
	if raceEnabled {
		total = 25_000
	}
	s, logs, _ := rawDevice(t, fwupdate.Config{})
	rng := rand.New(rand.NewPCG(5, 5))
	kinds := []func() []byte{
		func() []byte { // garbage
			b := make([]byte, 1+rng.IntN(64))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return b
		},
		func() []byte { // truncated option
			return append(rawHeader(message.Confirmable, 0, codes.GET, s.nextMID()), 0xBA, '5')
		},
		func() []byte { // Block1 out of sequence
			return encode(s.req(codes.PUT, "/5/0/0", 42, make([]byte, 64), block1(int64(1+rng.IntN(1000)), true)))
		},
		func() []byte { // an undecodable write
			return encode(s.req(codes.POST, "/1/0", 11542, []byte{0xD8, 1, 0xff, 0xff, 0xff}))
		},
		func() []byte { // a bad Package URI
			return encode(s.req(codes.PUT, "/5/0/1", 0, []byte("\xff\xfe")))
		},
	}
	// Warm up pools and caches before the baseline.
	for range 2000 {
		s.send(kinds[rng.IntN(len(kinds))]())
	}
	if _, _, err := s.probe(); err != nil {
		t.Fatal(err)
	}
	before := heapAfterGC()
	for i := range total {
		s.send(kinds[rng.IntN(len(kinds))]())
		if i%200 == 199 {
			// Pace the flood so the socket buffer does not simply drop it.
			if code, _, err := s.probe(); err != nil || code != codes.Content {
				t.Fatalf("after %d requests the client stopped serving: %v %v", i+1, code, err)
			}
		}
	}
	after := heapAfterGC()
	growth := int64(after) - int64(before)
	info, debug, _ := logs.counts()
	t.Logf("%d malformed requests: heap %d → %d bytes (%+d); logs: %d at Info+, %d at Debug", total, before, after, growth, info, debug)
	if growth > 4<<20 {
		t.Fatalf("heap grew by %d bytes over %d malformed requests", growth, total)
	}
}

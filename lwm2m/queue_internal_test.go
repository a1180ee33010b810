package lwm2m

import (
	"testing"
	"time"
)

// The queue window defaults to MAX_TRANSMIT_WAIT of the Tx parameters, as
// LwM2M 1.1 Core §6.5 recommends; 93 s with RFC 7252's.
func TestQueueWindowDefault(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want time.Duration
	}{
		{Config{}, 93 * time.Second},
		{Config{Tx: TxParams{AckTimeout: time.Second, MaxRetransmit: 2}}, time.Duration(float64(time.Second) * 7 * 1.5)},
		{Config{QueueWindow: 5 * time.Second}, 5 * time.Second},
	} {
		tc.cfg.Endpoint, tc.cfg.Server, tc.cfg.QueueMode = "ep", "coap://127.0.0.1:5683", true
		c, err := New(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.window(); got != tc.want {
			t.Errorf("window with %+v = %v, want %v", tc.cfg.Tx, got, tc.want)
		}
	}
}

// A session does not sleep while it answers a request, or while a
// block-wise write is in progress (whose middle blocks block1Fast answers
// without dispatch), even past its window; it does once they are done.
func TestQueueNoSleepWhileBusy(t *testing.T) {
	c, err := New(Config{Endpoint: "ep", Server: "coap://127.0.0.1:5683", QueueMode: true, QueueWindow: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := newSession(c, 1, 0, 0, "coap://127.0.0.1:5683", "127.0.0.1:5683", nil)
	past := func() {
		s.gate.mu.Lock()
		s.gate.last = time.Now().Add(-time.Hour)
		s.gate.mu.Unlock()
	}

	if !s.gate.listening() {
		t.Fatal("an awake session does not listen")
	}
	past()
	if s.trySleep(false) {
		t.Error("slept while answering a request")
	}
	s.leave()
	past()

	s.blocks.mu.Lock()
	s.blocks.cur = &transfer{}
	s.blocks.mu.Unlock()
	if s.trySleep(false) {
		t.Error("slept during a block-wise write")
	}
	s.blocks.mu.Lock()
	s.blocks.cur.done = true
	s.blocks.mu.Unlock()
	if !s.trySleep(false) {
		t.Error("did not sleep past the window with nothing in flight")
	}
}

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

package lwm2m

import (
	"testing"
	"time"
)

// Updates are due before the lifetime ends, with room for a whole
// retransmission sequence (MAX_TRANSMIT_WAIT, RFC 7252 §4.8.2) when the
// lifetime allows, and never earlier than half the lifetime.
func TestUpdateInterval(t *testing.T) {
	wait := TxParams{}.Defaults().MaxTransmitWait()
	for _, tc := range []struct {
		lifetime, want time.Duration
	}{
		{2 * time.Second, time.Second},                      // margin capped at half
		{60 * time.Second, 30 * time.Second},                // still capped
		{300 * time.Second, 300*time.Second - wait},         // MAX_TRANSMIT_WAIT ahead
		{86400 * time.Second, 86400 * time.Second * 9 / 10}, // a tenth ahead
	} {
		c, err := New(Config{Endpoint: "t", Server: "coap://127.0.0.1:5683", Lifetime: tc.lifetime})
		if err != nil {
			t.Fatal(err)
		}
		got := c.buildSessions()[0].updateInterval()
		if got != tc.want || got >= tc.lifetime || got < tc.lifetime/2 {
			t.Errorf("lifetime %v: update after %v, want %v (MAX_TRANSMIT_WAIT %v)", tc.lifetime, got, tc.want, wait)
		}
	}
}

func TestSecurityModeString(t *testing.T) {
	for m, want := range map[SecurityMode]string{SecurityPSK: "PSK", SecurityRPK: "RPK", SecurityCertificate: "Certificate", SecurityNoSec: "NoSec", 7: "SecurityMode(7)"} {
		if got := m.String(); got != want {
			t.Errorf("SecurityMode(%d).String() = %q, want %q", int64(m), got, want)
		}
	}
}

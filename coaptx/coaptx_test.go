package coaptx

import (
	"testing"
	"time"
)

// RFC 7252 §4.8: the defaults, and MAX_TRANSMIT_WAIT 93 s from them (§4.8.2).
func TestDefaults(t *testing.T) {
	want := Params{AckTimeout: 2 * time.Second, AckRandomFactor: 1.5, MaxRetransmit: 4}
	if got := (Params{}).Defaults(); got != want {
		t.Errorf("Defaults() = %+v, want %+v", got, want)
	}
	kept := Params{AckTimeout: time.Second, AckRandomFactor: 1, MaxRetransmit: 2}
	if got := kept.Defaults(); got != kept {
		t.Errorf("Defaults() changed set fields: %+v", got)
	}
	if got := (Params{}).MaxTransmitWait(); got != 93*time.Second {
		t.Errorf("MaxTransmitWait() = %v, want 93s", got)
	}
	if got := kept.MaxTransmitWait(); got != 7*time.Second {
		t.Errorf("MaxTransmitWait() = %v, want 7s", got)
	}
}

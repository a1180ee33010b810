package lwm2m

import (
	"testing"
	"time"
)

// Non-confirmable notifications turn Confirmable once a day (RFC 7641 §4.5).
func TestConfirmableEvery24h(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		non   bool
		attr  *bool
		since time.Duration
		want  bool
	}{
		{false, nil, 0, true},
		{true, nil, time.Hour, false},
		{true, nil, 24 * time.Hour, true},
		{false, &no, 23 * time.Hour, false},
		{false, &no, 25 * time.Hour, true},
		{true, &yes, 0, true},
	} {
		if got := confirmable(tc.non, tc.attr, tc.since); got != tc.want {
			t.Errorf("confirmable(non %v, con %v, since %v) = %v, want %v", tc.non, tc.attr != nil && *tc.attr, tc.since, got, tc.want)
		}
	}
}

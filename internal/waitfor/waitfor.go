// Package waitfor polls a condition in tests until it holds or a deadline
// passes, in place of hand-written sleep loops.
package waitfor

import (
	"testing"
	"time"
)

// The time between two checks starts at minInterval and doubles up to
// maxInterval: a condition that holds soon is seen soon, and a check that
// costs something (an HTTP request, a process) does not run hot.
const (
	minInterval = 5 * time.Millisecond
	maxInterval = 50 * time.Millisecond
)

// Until calls check until it returns nil, and fails tb with
// check's last error if timeout passes first. check runs at least once.
func Until(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	if err := Poll(timeout, check); err != nil {
		tb.Fatalf("after %v: %v", timeout, err)
	}
}

// Poll is Until for callers that are not on the test's goroutine or that
// handle a timeout themselves: it returns check's last error, or nil.
func Poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for wait := minInterval; ; wait = min(2*wait, maxInterval) {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
	}
}

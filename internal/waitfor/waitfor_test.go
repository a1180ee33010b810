package waitfor

import (
	"errors"
	"testing"
	"time"
)

func TestPollReturnsOnceCheckHolds(t *testing.T) {
	n := 0
	err := Poll(10*time.Second, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Errorf("Poll = %v after %d checks, want nil after 3", err, n)
	}
}

func TestPollReturnsLastErrorAtDeadline(t *testing.T) {
	n := 0
	errLast := errors.New("last")
	err := Poll(30*time.Millisecond, func() error {
		n++
		return errLast
	})
	if !errors.Is(err, errLast) || n < 2 {
		t.Errorf("Poll = %v after %d checks, want the check's error after several", err, n)
	}
}

func TestPollChecksOnceWithoutTime(t *testing.T) {
	n := 0
	if err := Poll(0, func() error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("Poll(0) = %v after %d checks", err, n)
	}
}

// fakeTB records a Fatalf instead of stopping the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = format
}

func TestUntilFailsTheTest(t *testing.T) {
	tb := &fakeTB{}
	Until(tb, 0, func() error { return errors.New("never") })
	if tb.failed == "" {
		t.Error("Until did not fail the test at the deadline")
	}
	tb = &fakeTB{}
	Until(tb, 0, func() error { return nil })
	if tb.failed != "" {
		t.Error("Until failed the test although the check held")
	}
}

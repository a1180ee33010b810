package model

import "testing"

// The core table answers for the resources the objects define (their
// definitions take their types from it) and for no others.
func TestCoreTypes(t *testing.T) {
	for _, c := range []struct {
		obj, res uint16
		want     Type
	}{
		{0, 0, TypeString},    // Security: LwM2M Server URI
		{1, 1, TypeInteger},   // Server: Lifetime
		{3, 13, TypeTime},     // Device: Current Time
		{5, 2, TypeNone},      // Firmware Update: Update
		{5, 13, TypeUnsigned}, // Firmware Update: Maximum Defer Period
	} {
		if got, ok := CoreTypes(NewPath(c.obj, 0, c.res)); !ok || got != c.want {
			t.Errorf("CoreTypes(/%d/0/%d) = %v, %v; want %v", c.obj, c.res, got, ok, c.want)
		}
		if got := MustCoreType(c.obj, c.res); got != c.want {
			t.Errorf("MustCoreType(%d, %d) = %v, want %v", c.obj, c.res, got, c.want)
		}
	}
	if _, ok := CoreTypes(NewPath(9, 0, 0)); ok {
		t.Error("CoreTypes knows /9/0/0")
	}
	defer func() {
		if recover() == nil {
			t.Error("MustCoreType(3, 99) did not panic")
		}
	}()
	MustCoreType(3, 99)
}

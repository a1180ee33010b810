package fwobj

import "testing"

// The names are the ones OMA object 5 gives the values; a value outside
// the resource's range names its number.
func TestStrings(t *testing.T) {
	for _, c := range []struct {
		v    interface{ String() string }
		want string
	}{
		{StateIdle, "Idle"},
		{StateUpdating, "Updating"},
		{StateUnknown, "State(-1)"},
		{State(4), "State(4)"},
		{ResultInitial, "Initial"},
		{ResultNoSpace, "Not enough storage"},
		{ResultUnsupportedPackage, "Unsupported package type"},
		{ResultUpdateFailed, "Firmware update failed"},
		{ResultDeferred, "Deferred"},
		{ResultUnknown, "Result(-1)"},
		{Result(12), "Result(12)"},
	} {
		if got := c.v.String(); got != c.want {
			t.Errorf("%#v: %q, want %q", c.v, got, c.want)
		}
	}
}

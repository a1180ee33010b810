package server

import "testing"

// The phases keep the texts that timeouts, cancellations and the log of
// an update's outcome have always named (scripts match them).
func TestPhaseNames(t *testing.T) {
	for p, want := range map[phase]string{
		phaseCheck:           "checking the package",
		phaseReadState:       "reading the firmware state",
		phaseCheckMethod:     "checking the delivery method",
		phaseReset:           "resetting the previous download",
		phasePush:            "pushing the package",
		phasePublish:         "publishing the package",
		phaseWriteURI:        "writing the Package URI",
		phaseWaitDownload:    "waiting for the download",
		phaseExecute:         "executing Update",
		phaseWaitOutcome:     "waiting for the device to report the result of the update",
		phaseWaitOutcome + 1: "phase(10)",
		-1:                   "phase(-1)",
	} {
		if got := p.String(); got != want {
			t.Errorf("phase %d: %q, want %q", int(p), got, want)
		}
	}
}

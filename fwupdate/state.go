package fwupdate

import (
	"strconv"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// State is the value of /5/0/3.
type State int

const (
	StateIdle        State = 0
	StateDownloading State = 1
	StateDownloaded  State = 2
	StateUpdating    State = 3
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "Idle"
	case StateDownloading:
		return "Downloading"
	case StateDownloaded:
		return "Downloaded"
	case StateUpdating:
		return "Updating"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Result is the value of /5/0/5, Update Result.
type Result int

const (
	ResultInitial             Result = 0
	ResultSuccess             Result = 1
	ResultNoSpace             Result = 2
	ResultNoMemory            Result = 3
	ResultConnectionLost      Result = 4
	ResultIntegrity           Result = 5
	ResultUnsupportedPackage  Result = 6
	ResultInvalidURI          Result = 7
	ResultUpdateFailed        Result = 8
	ResultUnsupportedProtocol Result = 9
	ResultCancelled           Result = 10
	ResultDeferred            Result = 11
)

var resultNames = [...]string{
	"Initial", "Success", "Not enough storage", "Out of memory", "Connection lost",
	"Integrity check failure", "Unsupported package type", "Invalid URI",
	"Firmware update failed", "Unsupported protocol", "Cancelled", "Deferred",
}

func (r Result) String() string {
	if r >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "Result(" + strconv.Itoa(int(r)) + ")"
}

// event is what happens to the object: a server operation or the end of
// a download or upgrade.
type event int

const (
	evPackage       event = iota // first block of a Package write, or a complete small write
	evPackageReset               // empty or single "\0" Package write
	evURI                        // valid Package URI with a supported scheme
	evURIEmpty                   // "" written to Package URI
	evURIBad                     // Package URI with an unsupported scheme or unparsable
	evDownloaded                 // download complete and StreamFinish accepted it
	evFailed                     // download failed; the result comes with the event
	evCancel                     // Cancel (/5/0/10) executed
	evUpdate                     // Update (/5/0/2) executed
	evUpgradeOK                  // the upgrade succeeded
	evUpgradeFailed              // the upgrade failed; the result comes with the event
)

// rule is one row of the transition table.
type rule struct {
	to     State
	result Result // ResultInitial unless keep or given by the event
	keep   bool   // the result is left unchanged
	given  bool   // the result comes with the event
	reset  bool   // Reset is called on the handlers
	code   codes.Code
}

type key struct {
	from State
	ev   event
}

// transitions is the table of docs/FIRMWARE_UPDATE.md "States and
// transitions". A (state, event) pair
// that is not listed leaves everything unchanged and is answered with the
// code of refusals below.
var transitions = map[key]rule{
	{StateIdle, evPackage}:             {to: StateDownloading, code: codes.Changed},
	{StateIdle, evURI}:                 {to: StateDownloading, code: codes.Changed},
	{StateIdle, evURIBad}:              {to: StateIdle, given: true, code: codes.BadRequest},
	{StateIdle, evPackageReset}:        {to: StateIdle, code: codes.Changed},
	{StateIdle, evURIEmpty}:            {to: StateIdle, code: codes.Changed},
	{StateDownloading, evDownloaded}:   {to: StateDownloaded},
	{StateDownloading, evFailed}:       {to: StateIdle, given: true, reset: true},
	{StateDownloading, evPackageReset}: {to: StateIdle, reset: true, code: codes.Changed},
	{StateDownloaded, evPackageReset}:  {to: StateIdle, reset: true, code: codes.Changed},
	{StateDownloading, evURIEmpty}:     {to: StateIdle, reset: true, code: codes.Changed},
	{StateDownloaded, evURIEmpty}:      {to: StateIdle, reset: true, code: codes.Changed},
	{StateDownloading, evCancel}:       {to: StateIdle, result: ResultCancelled, reset: true, code: codes.Changed},
	{StateDownloaded, evCancel}:        {to: StateIdle, result: ResultCancelled, reset: true, code: codes.Changed},
	{StateDownloaded, evUpdate}:        {to: StateUpdating, code: codes.Changed},
	{StateUpdating, evUpgradeOK}:       {to: StateIdle, result: ResultSuccess},
	{StateUpdating, evUpgradeFailed}:   {to: StateDownloaded, given: true},
	{StateDownloading, evPackage}:      {to: StateDownloading, keep: true, code: codes.BadRequest},
	{StateDownloaded, evPackage}:       {to: StateDownloaded, keep: true, code: codes.BadRequest},
	{StateDownloading, evURI}:          {to: StateDownloading, keep: true, code: codes.BadRequest},
	{StateDownloaded, evURI}:           {to: StateDownloaded, keep: true, code: codes.BadRequest},
	{StateDownloading, evURIBad}:       {to: StateDownloading, keep: true, code: codes.BadRequest},
	{StateDownloaded, evURIBad}:        {to: StateDownloaded, keep: true, code: codes.BadRequest},
}

// refusal is the answer to an operation the table does not list: Update
// outside Downloaded, Cancel outside Downloading and Downloaded, and any
// write while Updating are 4.05 (docs/FIRMWARE_UPDATE.md).
const refusal = codes.MethodNotAllowed

// lookup returns the rule for ev in state from.
func lookup(from State, ev event) rule {
	r, ok := transitions[key{from, ev}]
	if !ok {
		return rule{to: from, keep: true, code: refusal}
	}
	return r
}

// refused reports whether r rejects the operation without changing anything.
func (r rule) refused() bool { return r.code >= codes.BadRequest && !r.given }

package fwupdate

import (
	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

// The /5 vocabulary is package fwobj's, shared with the server; these
// names keep it at hand for users of fwupdate.

// State is the value of /5/0/3.
type State = fwobj.State

// State values.
const (
	StateIdle        = fwobj.StateIdle
	StateDownloading = fwobj.StateDownloading
	StateDownloaded  = fwobj.StateDownloaded
	StateUpdating    = fwobj.StateUpdating
)

// Result is the value of /5/0/5, Update Result.
type Result = fwobj.Result

// Update Result values.
const (
	ResultInitial             = fwobj.ResultInitial
	ResultSuccess             = fwobj.ResultSuccess
	ResultNoSpace             = fwobj.ResultNoSpace
	ResultNoMemory            = fwobj.ResultNoMemory
	ResultConnectionLost      = fwobj.ResultConnectionLost
	ResultIntegrity           = fwobj.ResultIntegrity
	ResultUnsupportedPackage  = fwobj.ResultUnsupportedPackage
	ResultInvalidURI          = fwobj.ResultInvalidURI
	ResultUpdateFailed        = fwobj.ResultUpdateFailed
	ResultUnsupportedProtocol = fwobj.ResultUnsupportedProtocol
	ResultCancelled           = fwobj.ResultCancelled
	ResultDeferred            = fwobj.ResultDeferred
)

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
	err    error  // the answer to the operation; nil is 2.04 Changed
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
	{StateIdle, evPackage}:             {to: StateDownloading},
	{StateIdle, evURI}:                 {to: StateDownloading},
	{StateIdle, evURIBad}:              {to: StateIdle, given: true, err: lwm2m.ErrBadRequest},
	{StateIdle, evPackageReset}:        {to: StateIdle},
	{StateIdle, evURIEmpty}:            {to: StateIdle},
	{StateDownloading, evDownloaded}:   {to: StateDownloaded},
	{StateDownloading, evFailed}:       {to: StateIdle, given: true, reset: true},
	{StateDownloading, evPackageReset}: {to: StateIdle, reset: true},
	{StateDownloaded, evPackageReset}:  {to: StateIdle, reset: true},
	{StateDownloading, evURIEmpty}:     {to: StateIdle, reset: true},
	{StateDownloaded, evURIEmpty}:      {to: StateIdle, reset: true},
	{StateDownloading, evCancel}:       {to: StateIdle, result: ResultCancelled, reset: true},
	{StateDownloaded, evCancel}:        {to: StateIdle, result: ResultCancelled, reset: true},
	{StateDownloaded, evUpdate}:        {to: StateUpdating},
	{StateUpdating, evUpgradeOK}:       {to: StateIdle, result: ResultSuccess},
	{StateUpdating, evUpgradeFailed}:   {to: StateDownloaded, given: true},
	{StateDownloading, evPackage}:      {to: StateDownloading, keep: true, err: lwm2m.ErrBadRequest},
	{StateDownloaded, evPackage}:       {to: StateDownloaded, keep: true, err: lwm2m.ErrBadRequest},
	{StateDownloading, evURI}:          {to: StateDownloading, keep: true, err: lwm2m.ErrBadRequest},
	{StateDownloaded, evURI}:           {to: StateDownloaded, keep: true, err: lwm2m.ErrBadRequest},
	{StateDownloading, evURIBad}:       {to: StateDownloading, keep: true, err: lwm2m.ErrBadRequest},
	{StateDownloaded, evURIBad}:        {to: StateDownloaded, keep: true, err: lwm2m.ErrBadRequest},
}

// refusal is the answer to an operation the table does not list: Update
// outside Downloaded, Cancel outside Downloading and Downloaded, and any
// write while Updating are 4.05 (docs/FIRMWARE_UPDATE.md).
var refusal = lwm2m.ErrMethodNotAllowed

// lookup returns the rule for ev in state from.
func lookup(from State, ev event) rule {
	r, ok := transitions[key{from, ev}]
	if !ok {
		return rule{to: from, keep: true, err: refusal}
	}
	return r
}

// refused reports whether r rejects the operation without changing anything.
func (r rule) refused() bool { return r.err != nil && !r.given }

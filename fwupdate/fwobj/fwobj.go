// Package fwobj is the vocabulary of the LwM2M Firmware Update object
// (/5, OMA object 5 version 1.1): its resource IDs, the values of State
// (/5/0/3) and Update Result (/5/0/5), and their names.
//
// The device side (package fwupdate, which re-exports these names) and
// the server side (package server) both speak it. It imports nothing, so
// a server or a tool can use it without the client core.
package fwobj

import "strconv"

// Object 5 and its resources (OMA registry, object 5 version 1.1).
const (
	ObjectID      = 5
	ObjectVersion = "1.1"

	ResPackage         = 0
	ResPackageURI      = 1
	ResUpdate          = 2
	ResState           = 3
	ResUpdateResult    = 5
	ResPkgName         = 6
	ResPkgVersion      = 7
	ResProtocolSupport = 8
	ResDeliveryMethod  = 9
	ResCancel          = 10
	ResSeverity        = 11
	ResLastStateChange = 12
	ResMaxDeferPeriod  = 13
)

// Severity values of /5/0/11.
const (
	SeverityCritical  = 0
	SeverityMandatory = 1
	SeverityOptional  = 2
)

// State is the value of /5/0/3.
type State int

// State values.
const (
	StateIdle        State = 0
	StateDownloading State = 1
	StateDownloaded  State = 2
	StateUpdating    State = 3

	// StateUnknown is not a value of the resource: it stands for a State
	// an observer has not read yet.
	StateUnknown State = -1
)

var stateNames = [...]string{"Idle", "Downloading", "Downloaded", "Updating"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Result is the value of /5/0/5, Update Result.
type Result int

// Update Result values.
const (
	ResultInitial             Result = 0
	ResultSuccess             Result = 1
	ResultNoSpace             Result = 2 // not enough storage for the package
	ResultNoMemory            Result = 3 // out of memory while downloading
	ResultConnectionLost      Result = 4
	ResultIntegrity           Result = 5
	ResultUnsupportedPackage  Result = 6
	ResultInvalidURI          Result = 7
	ResultUpdateFailed        Result = 8
	ResultUnsupportedProtocol Result = 9
	ResultCancelled           Result = 10
	ResultDeferred            Result = 11

	// ResultUnknown is not a value of the resource: it stands for an
	// Update Result an observer has not read yet.
	ResultUnknown Result = -1
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

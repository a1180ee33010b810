package campaign

import (
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// Errors of the engine.
var (
	ErrNotFound     = errors.New("campaign: not found")
	ErrInvalid      = errors.New("campaign: invalid campaign")
	ErrState        = errors.New("campaign: not possible in the campaign's state")
	ErrNoPackage    = errors.New("campaign: no such package")
	ErrTooLarge     = errors.New("campaign: package too large")
	ErrEmptyPackage = errors.New("campaign: the package is empty")
)

// Campaign states.
const (
	StateRunning = "running"
	StatePaused  = "paused"
	StateAborted = "aborted"
	StateDone    = "done"
)

// Device statuses: where a device is in its campaign.
const (
	DevicePending   = "pending"   // its wave has not come
	DeviceWaiting   = "waiting"   // its wave came; it was offline or did not answer
	DeviceRunning   = "running"   // its update runs (or is checked after a restart)
	DeviceSucceeded = "succeeded" // Update Result Success
	DeviceFailed    = "failed"    // another result, an error, or no outcome in time
	DeviceSkipped   = "skipped"   // did not match the target, or the campaign was aborted
	DeviceExpired   = "expired"   // the deadline passed before it could be updated
)

// Methods: how devices get the package.
const (
	MethodPullCoAP  = "pull-coap"
	MethodPullCoAPS = "pull-coaps"
	MethodPullHTTP  = "pull-http"
	MethodPullHTTPS = "pull-https"
	MethodPush      = "push"
)

// serverMethod maps a method to what server.Update offers; coaps and
// https pulls need image listeners the server does not have (yet).
func serverMethod(m string) (server.Method, error) {
	switch m {
	case MethodPullCoAP, "pull", "":
		return server.PullCoAP, nil
	case MethodPullHTTP:
		return server.PullHTTP, nil
	case MethodPush:
		return server.Push, nil
	case MethodPullCoAPS, MethodPullHTTPS:
		return 0, fmt.Errorf("%w: method %s: the server serves images over coap and http only", ErrInvalid, m)
	}
	return 0, fmt.Errorf("%w: unknown method %q (want pull-coap, pull-http or push)", ErrInvalid, m)
}

// Target chooses a campaign's devices.
type Target struct {
	// Endpoints is a path.Match glob over endpoint names; empty means "*".
	Endpoints string `json:"endpoints"`
	// FirmwareVersion, when set, must equal the device's /3/0/3.
	FirmwareVersion string `json:"firmware_version,omitempty"`
	// Resource, when set, must read as Equals (plain text).
	Resource *ResourceMatch `json:"resource,omitempty"`
}

// ResourceMatch is a resource that must hold a value.
type ResourceMatch struct {
	Path   string `json:"path"`
	Equals string `json:"equals"`
}

// Rollout says how fast a campaign goes.
type Rollout struct {
	// Canary is the number of devices updated first, in a wave of their own.
	Canary int `json:"canary"`
	// WaveSize is the number of devices in each later wave; WavePercent,
	// used when WaveSize is zero, a percentage of the campaign's devices.
	// Neither: one wave with the rest.
	WaveSize    int     `json:"wave_size,omitempty"`
	WavePercent float64 `json:"wave_percent,omitempty"`
	// Concurrency caps the updates running at once; zero means 10.
	Concurrency int `json:"concurrency,omitempty"`
	// FailureThresholdPercent pauses the campaign when more than this
	// share of a wave's devices failed; nil means 5, 0 pauses at the
	// first failure, 100 never.
	FailureThresholdPercent *float64 `json:"failure_threshold_percent,omitempty"`
}

// Spec is what a campaign is created from (the body of POST /api/campaigns).
type Spec struct {
	Name     string    `json:"name"`
	Package  string    `json:"package"` // a package ID
	Target   Target    `json:"target"`
	Method   string    `json:"method"`
	Rollout  Rollout   `json:"rollout"`
	Deadline time.Time `json:"deadline"`
}

// DefaultConcurrency and DefaultFailureThreshold fill a Rollout's zero fields.
const (
	DefaultConcurrency      = 10
	DefaultFailureThreshold = 5.0
)

func (s *Spec) check(now time.Time) error {
	if s.Name == "" {
		return fmt.Errorf("%w: name is required", ErrInvalid)
	}
	if len(s.Name) > 200 {
		return fmt.Errorf("%w: name longer than 200 bytes", ErrInvalid)
	}
	if s.Package == "" {
		return fmt.Errorf("%w: package is required", ErrInvalid)
	}
	if s.Target.Endpoints == "" {
		s.Target.Endpoints = "*"
	}
	if _, err := path.Match(s.Target.Endpoints, ""); err != nil {
		return fmt.Errorf("%w: bad endpoint glob %q: %v", ErrInvalid, s.Target.Endpoints, err)
	}
	if r := s.Target.Resource; r != nil {
		if _, err := model.ParsePath(r.Path); err != nil {
			return fmt.Errorf("%w: target resource: %v", ErrInvalid, err)
		}
		if p, _ := model.ParsePath(r.Path); p.Len() != 3 && p.Len() != 4 {
			return fmt.Errorf("%w: target resource %s is not a resource path", ErrInvalid, r.Path)
		}
	}
	if s.Method == "" {
		s.Method = MethodPullCoAP
	}
	if s.Method == "pull" {
		s.Method = MethodPullCoAP
	}
	if _, err := serverMethod(s.Method); err != nil {
		return err
	}
	r := &s.Rollout
	if r.Canary < 0 || r.WaveSize < 0 || r.Concurrency < 0 {
		return fmt.Errorf("%w: canary, wave_size and concurrency cannot be negative", ErrInvalid)
	}
	if r.WavePercent < 0 || r.WavePercent > 100 {
		return fmt.Errorf("%w: wave_percent must be between 0 and 100", ErrInvalid)
	}
	if r.Concurrency == 0 {
		r.Concurrency = DefaultConcurrency
	}
	if r.FailureThresholdPercent == nil {
		v := DefaultFailureThreshold
		r.FailureThresholdPercent = &v
	}
	if t := *r.FailureThresholdPercent; t < 0 || t > 100 {
		return fmt.Errorf("%w: failure_threshold_percent must be between 0 and 100", ErrInvalid)
	}
	if s.Deadline.IsZero() {
		return fmt.Errorf("%w: deadline is required (RFC 3339)", ErrInvalid)
	}
	if !s.Deadline.After(now) {
		return fmt.Errorf("%w: deadline %s has passed", ErrInvalid, s.Deadline.Format(time.RFC3339))
	}
	return nil
}

// Wave is one wave's progress. Wave 0 is the canary group when the
// rollout has one.
type Wave struct {
	Index   int    `json:"index"`
	Devices int    `json:"devices"`
	Done    int    `json:"done"`   // succeeded
	Failed  int    `json:"failed"` // failed (not expired: those were never tried)
	State   string `json:"state"`  // pending, running, done
	Canary  bool   `json:"canary,omitempty"`
	// Accepted is set when an operator resumed the campaign after this
	// wave crossed the failure threshold: it does not pause it again.
	Accepted bool `json:"accepted,omitempty"`
}

// Device is one device's progress in a campaign.
type Device struct {
	Endpoint string `json:"endpoint"`
	Wave     int    `json:"wave"`
	Status   string `json:"status"` // DevicePending ... DeviceExpired
	// Phase is the last server.Progress phase of its update ("deliver",
	// "uri", "state", "execute", "registered", "done"), or "check" while
	// the target is checked or a restarted update is verified.
	Phase      string    `json:"phase"`
	State      string    `json:"state"` // /5/0/3 by name, "" when unknown
	Result     int       `json:"result"`
	ResultName string    `json:"result_name"`
	Bytes      int64     `json:"bytes"`
	Total      int64     `json:"total,omitempty"`
	Error      string    `json:"error,omitempty"`
	Firmware   string    `json:"firmware,omitempty"` // /3/0/3 as last read
	Started    time.Time `json:"started,omitzero"`
	Updated    time.Time `json:"updated"`
	// Attempts counts the updates started on the device: at most one
	// reached it (a device the update never reached may be started again).
	Attempts int `json:"attempts"`
}

// Counts sums a campaign's devices by outcome.
type Counts struct {
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Pending   int `json:"pending"` // pending or waiting
	Running   int `json:"running"`
	Skipped   int `json:"skipped"`
	Expired   int `json:"expired"`
}

// Campaign is a campaign as the API shows it.
type Campaign struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Package     string    `json:"package"`
	Target      Target    `json:"target"`
	Method      string    `json:"method"`
	Rollout     Rollout   `json:"rollout"`
	State       string    `json:"state"`
	Created     time.Time `json:"created"`
	Deadline    time.Time `json:"deadline"`
	Finished    time.Time `json:"finished,omitzero"`
	PauseReason string    `json:"pause_reason"`
	Waves       []Wave    `json:"waves"`
	Devices     []Device  `json:"devices"`
	Counts      Counts    `json:"counts"`
}

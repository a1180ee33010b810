package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrUpdateFailed reports a firmware update that ended with a result other
// than Success; the returned fwobj.Result says why.
var ErrUpdateFailed = errors.New("server: firmware update failed")

// ErrEmptyPackage reports an update with an empty package file; nothing is
// sent to the device.
var ErrEmptyPackage = errors.New("server: the package is empty")

// ErrNoHTTPListener reports a pull-http update on a server without an
// HTTP image listener (Server.HTTPAddr; the flag -http of lwm2m server).
var ErrNoHTTPListener = errors.New("server: pull-http needs an HTTP image listener: start the server with -http ADDR")

// checkUpdate refuses an update that cannot work before anything is sent.
func (s *Server) checkUpdate(file string, method Method) error {
	if method == PullHTTP && s.HTTPLocalAddr() == nil {
		return ErrNoHTTPListener
	}
	return checkPackage(file)
}

// checkPackage refuses what cannot be a package before anything is sent:
// not a regular file (a device or a FIFO would be read forever) or empty.
func checkPackage(file string) error {
	st, err := os.Stat(file)
	if err != nil {
		return fmt.Errorf("server: package: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("server: package %s is not a regular file", file)
	}
	if st.Size() == 0 {
		return fmt.Errorf("%w: %s", ErrEmptyPackage, file)
	}
	return nil
}

// Method is how the package reaches the device (OMA Object 5, resource 9).
type Method int

// Delivery methods.
const (
	PullCoAP Method = iota // the server publishes the package and writes a coap:// URI to /5/0/1
	PullHTTP               // the same with an http:// URI; needs HTTPAddr
	Push                   // Block1 writes to /5/0/0
)

var methodNames = [...]string{"pull", "pull-http", "push"}

func (m Method) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return "method(" + strconv.Itoa(int(m)) + ")"
}

// ParseMethod parses "pull", "pull-http" or "push".
func ParseMethod(s string) (Method, error) {
	for i, n := range methodNames {
		if s == n {
			return Method(i), nil
		}
	}
	return 0, fmt.Errorf("server: unknown update method %q (want pull, pull-http or push)", s)
}

// Progress reports the course of one device's update.
type Progress struct {
	Endpoint string `json:"endpoint"`
	// Phase is one of "deliver" (bytes pushed), "uri" (Package URI
	// written), "state" (State or Update Result changed), "execute",
	// "registered" (the device registered again) and "done".
	Phase string `json:"phase"`
	Sent  int64  `json:"sent,omitempty"`
	Total int64  `json:"total,omitempty"`
	// State and Result are fwobj.StateUnknown and fwobj.ResultUnknown
	// (-1) in the phases "deliver", "uri" and "registered".
	State  fwobj.State  `json:"state"`
	Result fwobj.Result `json:"result"`
	URI    string       `json:"uri,omitempty"`
}

var (
	pathURI    = model.NewPath(fwobj.ObjectID, 0, fwobj.ResPackageURI)
	pathUpdate = model.NewPath(fwobj.ObjectID, 0, fwobj.ResUpdate)
	pathState  = model.NewPath(fwobj.ObjectID, 0, fwobj.ResState)
	pathResult = model.NewPath(fwobj.ObjectID, 0, fwobj.ResUpdateResult)
)

// fwState tracks /5/0/3 and /5/0/5 from notifications and reads.
type fwState struct {
	mu      sync.Mutex
	state   fwobj.State
	result  fwobj.Result
	changed chan struct{}
}

func (f *fwState) set(p model.Path, v int) {
	f.mu.Lock()
	if p == pathState {
		f.state = fwobj.State(v)
	} else {
		f.result = fwobj.Result(v)
	}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fwState) get() (fwobj.State, fwobj.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, f.result
}

func (f *fwState) forget() {
	f.mu.Lock()
	f.state, f.result = fwobj.StateUnknown, fwobj.ResultUnknown
	f.mu.Unlock()
}

// forgetState forgets the State only: the Update Result known when
// Update is executed stays true until the device notifies a new one.
func (f *fwState) forgetState() {
	f.mu.Lock()
	f.state = fwobj.StateUnknown
	f.mu.Unlock()
}

func parseIntPayload(c Content) (int, bool) {
	if c.Format != content.TextPlain {
		return 0, false
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(c.Payload)))
	return v, err == nil
}

// pollInterval is how often Update reads State and Result itself, in case
// a notification was lost or the device lost its observations.
const pollInterval = 3 * time.Second

// Update delivers pkgFile to ep by method, waits for State Downloaded,
// executes Update (/5/0/2) and waits until the device reports the outcome,
// usually after it restarted and registered again (OMA Object 5). It
// returns the final Update Result; err is nil only for Success. ctx bounds
// the whole procedure. progress, if not nil, is called from one goroutine
// at a time.
func (s *Server) Update(ctx context.Context, ep, pkgFile string, method Method, progress func(Progress)) (res fwobj.Result, err error) {
	if _, ok := s.Registration(ep); !ok {
		return 0, fmt.Errorf("%w: %q", ErrNotRegistered, ep)
	}
	log := s.logger().With("ep", ep, "method", method.String(), "package", pkgFile)
	// phase names what the update was doing, for the log of its outcome.
	phase := "checking the package"
	defer func() { logOutcome(log, phase, res, err) }()
	if err := s.checkUpdate(pkgFile, method); err != nil {
		return 0, err
	}
	var pmu sync.Mutex
	report := func(p Progress) {
		if progress == nil {
			return
		}
		p.Endpoint = ep
		pmu.Lock()
		defer pmu.Unlock()
		progress(p)
	}
	events, unwatch := s.watch(ep)
	defer unwatch()

	st := &fwState{state: fwobj.StateUnknown, result: fwobj.ResultUnknown, changed: make(chan struct{}, 1)}
	var obsMu sync.Mutex
	var observations []*Observation
	observe := func() {
		obsMu.Lock()
		defer obsMu.Unlock()
		for _, p := range []model.Path{pathState, pathResult} {
			o, err := s.Observe(ctx, ep, p, content.TextPlain, func(n Notification) {
				if v, ok := parseIntPayload(n.Content); ok {
					st.set(n.Path, v)
				}
			})
			if err != nil {
				log.Debug("observe failed; polling instead", "path", p, "err", err)
				continue
			}
			observations = append(observations, o)
		}
	}
	// dropObservations cancels the observations concurrently; wait says
	// whether to wait for the device's answers.
	dropObservations := func(wait bool) {
		obsMu.Lock()
		old := observations
		observations = nil
		obsMu.Unlock()
		var wg sync.WaitGroup
		for _, o := range old {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = o.Cancel(cctx)
			}()
		}
		if wait {
			wg.Wait()
		}
	}
	defer dropObservations(true)
	poll := func() error {
		// One exchange may take MAX_TRANSMIT_WAIT under load (a fleet
		// updating at once loses datagrams); RequestTimeout allows for it.
		d := s.RequestTimeout
		if d <= 0 {
			d = 30 * time.Second
		}
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		for _, p := range []model.Path{pathState, pathResult} {
			c, err := s.Read(rctx, ep, p, content.TextPlain)
			if err != nil {
				return err
			}
			v, ok := parseIntPayload(c)
			if !ok {
				return fmt.Errorf("server: %s on %s: not an integer: %q", p, ep, c.Payload)
			}
			st.set(p, v)
		}
		return nil
	}

	log.Info("firmware update started")
	phase = "reading the firmware state"
	if err := poll(); err != nil {
		return 0, updateError(ep, "reading firmware state", err)
	}
	phase = "checking the delivery method"
	if err := s.checkDeliveryMethod(ctx, ep, method); err != nil {
		return 0, err
	}
	state, result := st.get()
	switch state {
	case fwobj.StateUpdating:
		return result, fmt.Errorf("server: update %s: device is already updating", ep)
	case fwobj.StateDownloading, fwobj.StateDownloaded:
		// Object 5: an empty Package URI drops the previous package.
		log.Info("resetting previous download", "state", state.String())
		phase = "resetting the previous download"
		if err := s.Write(ctx, ep, pathURI, content.TextPlain, []byte{}, true); err != nil {
			return 0, updateError(ep, "dropping the previous package", err)
		}
	}
	observe()

	// delivered reports bytes pushed, or served to a pulling device.
	delivered := func(sent, total int64) {
		report(Progress{Phase: "deliver", Sent: sent, Total: total, State: fwobj.StateUnknown, Result: fwobj.ResultUnknown})
	}
	switch method {
	case Push:
		phase = "pushing the package"
		err := s.Push(ctx, ep, pkgFile, delivered)
		if err != nil {
			return 0, updateError(ep, "", err)
		}
	case PullCoAP, PullHTTP:
		phase = "publishing the package"
		im, err := s.Publish(pkgFile)
		if err != nil {
			return 0, err
		}
		// Whatever the outcome, the package is served no longer than
		// the update runs.
		defer s.Unpublish(im.ID)
		scheme := "coap"
		if method == PullHTTP {
			scheme = "http"
		}
		uri, err := s.imageURI(ep, im, scheme)
		if err != nil {
			return 0, err
		}
		phase = "writing the Package URI"
		// A pull's progress as the image servers see it.
		if stop, err := s.WatchImage(im.ID, ep, delivered); err == nil {
			defer stop()
		}
		if err := s.Write(ctx, ep, pathURI, content.TextPlain, []byte(uri), true); err != nil {
			return 0, updateError(ep, "writing Package URI", err)
		}
		log.Info("package URI written", "uri", uri)
		report(Progress{Phase: "uri", URI: uri, State: fwobj.StateUnknown, Result: fwobj.ResultUnknown})
	default:
		return 0, fmt.Errorf("server: update %s: %v not supported", ep, method)
	}

	// Values seen before delivery are stale from here on.
	phase = "waiting for the download"
	st.forget()
	_ = poll()
	executed := false
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var (
		noted bool
		lastS fwobj.State
		lastR fwobj.Result
	)
	// noteState reports State and Update Result when they changed.
	noteState := func() (state fwobj.State, result fwobj.Result) {
		state, result = st.get()
		if !noted || state != lastS || result != lastR {
			noted, lastS, lastR = true, state, result
			if state >= 0 && result >= 0 {
				log.Info("firmware state", "state", state.String(), "result", result.String())
				report(Progress{Phase: "state", State: state, Result: result})
			}
		}
		return state, result
	}
	for {
		state, result := noteState()
		if state >= 0 && result >= 0 {
			r := result
			switch {
			case !executed && state == fwobj.StateDownloaded:
				report(Progress{Phase: "execute", State: state, Result: r})
				phase = "executing Update"
				// The State seen so far is stale once Update runs. Forget it
				// now, not after the answer: the Updating notification can
				// arrive before Execute returns. The Result stays: it is
				// not notified again unless it changes, and without it the
				// Updating State would go unreported.
				st.forgetState()
				// A device may restart before it answers; do not wait for
				// that answer longer than for a normal exchange.
				ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := s.Execute(ectx, ep, pathUpdate, "")
				cancel()
				var ce *CodeError
				if errors.As(err, &ce) {
					return r, updateError(ep, "executing Update", err)
				}
				if err != nil {
					// The device may have restarted before answering.
					log.Warn("no answer to Update; waiting for the device", "err", err)
				}
				log.Info("update executed")
				phase = "waiting for the device to report the result of the update"
				executed = true
				continue
			case !executed && state == fwobj.StateIdle && r > fwobj.ResultSuccess:
				return s.finish(report, state, r)
			case executed && state == fwobj.StateIdle && r == fwobj.ResultSuccess:
				return s.finish(report, state, r)
			case executed && r > fwobj.ResultSuccess:
				return s.finish(report, state, r)
			}
		}
		select {
		case <-ctx.Done():
			why := "timed out"
			if ctx.Err() == context.Canceled {
				why = "cancelled"
			}
			msg := fmt.Sprintf("server: update %s: %s %s", ep, why, phase)
			if state >= 0 {
				msg += " (device state " + state.String() + ")"
			}
			return max(result, fwobj.ResultInitial), &wrapError{msg: msg, err: ctx.Err()}
		case <-st.changed:
		case reg := <-events:
			// What the old program notified before it went (Updating)
			// came first; select may have picked this case over it.
			noteState()
			// A new registration means the device restarted: its old
			// observations are gone (RFC 7641, 3.6).
			log.Info("device registered again during update", "addr", reg.Addr)
			report(Progress{Phase: "registered", State: fwobj.StateUnknown, Result: fwobj.ResultUnknown})
			// The old observations went with the old process; cancelling
			// them only stops the local callbacks, so do not wait.
			dropObservations(false)
			st.forget()
			_ = poll()
			observe()
		case <-tick.C:
			if err := poll(); err != nil {
				log.Debug("polling firmware state", "err", err)
			}
		}
	}
}

func (s *Server) finish(report func(Progress), state fwobj.State, r fwobj.Result) (fwobj.Result, error) {
	report(Progress{Phase: "done", State: state, Result: r})
	if r == fwobj.ResultSuccess {
		return r, nil
	}
	return r, fmt.Errorf("%w: result %d (%s)", ErrUpdateFailed, int(r), r)
}

// logOutcome logs how an update ended: success, the device's failure
// result, a timeout or cancellation and in which phase, or another error.
func logOutcome(log *slog.Logger, phase string, r fwobj.Result, err error) {
	switch {
	case err == nil:
		log.Info("firmware update succeeded", "result", int(r))
	case errors.Is(err, ErrUpdateFailed):
		log.Warn("firmware update failed", "result", int(r), "reason", r.String())
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn("firmware update timed out", "phase", phase, "err", err)
	case errors.Is(err, context.Canceled):
		log.Warn("firmware update cancelled", "phase", phase)
	default:
		log.Warn("firmware update failed", "phase", phase, "err", err)
	}
}

// updateError adds what an update of ep was doing to err, without
// repeating the package prefix that err already carries.
func updateError(ep, step string, err error) error {
	msg := "server: update " + ep + ": "
	if step != "" {
		msg += step + ": "
	}
	return &wrapError{msg: msg + strings.TrimPrefix(err.Error(), "server: "), err: err}
}

// wrapError is an error with its own message that wraps another.
type wrapError struct {
	msg string
	err error
}

func (e *wrapError) Error() string { return e.msg }
func (e *wrapError) Unwrap() error { return e.err }

// ErrDeliveryMethod reports an update by a method the device says it
// does not take (/5/0/9, Firmware Update Delivery Method).
var ErrDeliveryMethod = errors.New("server: delivery method not supported by the device")

var pathDelivery = model.NewPath(fwobj.ObjectID, 0, fwobj.ResDeliveryMethod)

// checkDeliveryMethod reads /5/0/9 (0 pull only, 1 push only, 2 both;
// OMA Object 5) and refuses a method the device does not support. A
// device without the resource (LwM2M 1.0) is given the benefit of the
// doubt.
func (s *Server) checkDeliveryMethod(ctx context.Context, ep string, method Method) error {
	c, err := s.Read(ctx, ep, pathDelivery, content.TextPlain)
	if err != nil {
		var ce *CodeError
		if errors.As(err, &ce) {
			return nil // 4.04 and the like: the resource is optional
		}
		return updateError(ep, "reading the delivery method", err)
	}
	v, ok := parseIntPayload(c)
	if !ok {
		return nil
	}
	switch {
	case v == 0 && method == Push:
		return updateError(ep, "", fmt.Errorf("%w: it takes the package by pull only (/5/0/9 = 0); use pull or pull-http", ErrDeliveryMethod))
	case v == 1 && method != Push:
		return updateError(ep, "", fmt.Errorf("%w: it takes the package by push only (/5/0/9 = 1); use push", ErrDeliveryMethod))
	}
	return nil
}

// DeviceResult is one device's outcome in UpdateMany.
type DeviceResult struct {
	Endpoint string
	Result   fwobj.Result
	Err      error
}

// UpdateMany runs Update concurrently on every registered endpoint that
// matches pattern (path.Match syntax, "*" for all) and returns each
// device's outcome, ordered by endpoint.
func (s *Server) UpdateMany(ctx context.Context, pattern, pkgFile string, method Method, progress func(Progress)) ([]DeviceResult, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("server: bad pattern %q: %w", pattern, err)
	}
	var eps []string
	for _, r := range s.Registrations() {
		if ok, _ := path.Match(pattern, r.Endpoint); ok {
			eps = append(eps, r.Endpoint)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: none matches %q", ErrNotRegistered, pattern)
	}
	if err := s.checkUpdate(pkgFile, method); err != nil {
		return nil, err
	}
	var pmu sync.Mutex
	safe := func(p Progress) {
		if progress == nil {
			return
		}
		pmu.Lock()
		defer pmu.Unlock()
		progress(p)
	}
	out := make([]DeviceResult, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.Update(ctx, ep, pkgFile, method, safe)
			out[i] = DeviceResult{Endpoint: ep, Result: r, Err: err}
		}()
	}
	wg.Wait()
	return out, nil
}

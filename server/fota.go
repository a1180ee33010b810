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

// ErrUpdateRunning reports an Update refused because another one of the
// same device is running (two campaigns, or a campaign and lwm2m server
// update): the second would reset the first's download and could leave
// the device running one package while the first reports the other.
var ErrUpdateRunning = errors.New("server: another firmware update of this device is running")

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
	// notes counts the notifications of State and of Update Result; see
	// readMark.
	notes [2]uint64
}

// slot is the index of p in notes.
func slot(p model.Path) int {
	if p == pathState {
		return 0
	}
	return 1
}

// notified applies a notification of p.
func (f *fwState) notified(p model.Path, v int) {
	f.mu.Lock()
	f.notes[slot(p)]++
	f.setLocked(p, v)
	f.mu.Unlock()
	f.wake()
}

// readMark is taken before a read of p is sent, and given to read with
// its answer. A read is no newer than a notification that arrived while
// it was in flight: the device may render the read, change, notify the
// change and only then send the read's answer, and the server handles
// the two on different goroutines. Applying such a read would take the
// State back (Downloading after Downloaded) with no notification to
// follow, leaving the update to the next poll. A notification that
// arrived first is the newer value, or the device notifies again
// (RFC 7641 §4.5: the last notification reflects the current state).
func (f *fwState) readMark(p model.Path) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notes[slot(p)]
}

// read applies the answer to a read of p sent at mark, unless a
// notification of p overtook it; it reports whether it did.
func (f *fwState) read(p model.Path, v int, mark uint64) bool {
	f.mu.Lock()
	ok := f.notes[slot(p)] == mark
	if ok {
		f.setLocked(p, v)
	}
	f.mu.Unlock()
	if ok {
		f.wake()
	}
	return ok
}

func (f *fwState) setLocked(p model.Path, v int) {
	if p == pathState {
		f.state = fwobj.State(v)
	} else {
		f.result = fwobj.Result(v)
	}
}

func (f *fwState) wake() {
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

// claimUpdate marks ep as updating, unless it is already.
func (s *Server) claimUpdate(ep string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.updating[ep] {
		return false
	}
	if s.updating == nil {
		s.updating = make(map[string]bool)
	}
	s.updating[ep] = true
	return true
}

func (s *Server) releaseUpdate(ep string) {
	s.mu.Lock()
	delete(s.updating, ep)
	s.mu.Unlock()
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
	if !s.claimUpdate(ep) {
		return 0, fmt.Errorf("%w: %q", ErrUpdateRunning, ep)
	}
	defer s.releaseUpdate(ep)
	u := &updateRun{
		s:        s,
		ep:       ep,
		log:      s.logger().With("ep", ep, "method", method.String(), "package", pkgFile),
		progress: progress,
		st:       fwState{state: fwobj.StateUnknown, result: fwobj.ResultUnknown, changed: make(chan struct{}, 1)},
	}
	defer func() { logOutcome(u.log, u.phase, res, err) }()
	if err := s.checkUpdate(pkgFile, method); err != nil {
		return 0, err
	}
	events, unwatch := s.watch(ep)
	defer unwatch()
	u.events = events
	defer u.dropObservations(true)

	u.log.Info("firmware update started")
	if res, err := u.check(ctx, method); err != nil {
		return res, err
	}
	u.observe(ctx)
	undo, err := u.deliver(ctx, pkgFile, method)
	defer undo()
	if err != nil {
		return 0, err
	}

	// Values seen before delivery are stale from here on.
	u.phase = phaseWaitDownload
	u.st.forget()
	u.refresh(ctx)
	every := pollInterval
	if s.statePoll > 0 {
		every = s.statePoll
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	u.tick = tick.C
	state, result, err := u.waitFor(ctx, func(s fwobj.State, r fwobj.Result) bool {
		return s == fwobj.StateDownloaded || s == fwobj.StateIdle && r > fwobj.ResultSuccess
	})
	if err != nil {
		return max(result, fwobj.ResultInitial), err
	}
	if state != fwobj.StateDownloaded {
		return u.finish(state, result) // the download failed
	}
	if err := u.execute(ctx, state, result); err != nil {
		return result, err
	}
	state, result, err = u.waitFor(ctx, func(s fwobj.State, r fwobj.Result) bool {
		return s == fwobj.StateIdle && r == fwobj.ResultSuccess || r > fwobj.ResultSuccess
	})
	if err != nil {
		return max(result, fwobj.ResultInitial), err
	}
	return u.finish(state, result)
}

// phase is what an update is doing: the log of its outcome and the error
// of a timeout or a cancellation name it.
type phase int

const (
	phaseCheck phase = iota
	phaseReadState
	phaseCheckMethod
	phaseReset
	phasePush
	phasePublish
	phaseWriteURI
	phaseWaitDownload
	phaseExecute
	phaseWaitOutcome
)

var phaseNames = [...]string{
	phaseCheck:        "checking the package",
	phaseReadState:    "reading the firmware state",
	phaseCheckMethod:  "checking the delivery method",
	phaseReset:        "resetting the previous download",
	phasePush:         "pushing the package",
	phasePublish:      "publishing the package",
	phaseWriteURI:     "writing the Package URI",
	phaseWaitDownload: "waiting for the download",
	phaseExecute:      "executing Update",
	phaseWaitOutcome:  "waiting for the device to report the result of the update",
}

func (p phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "phase(" + strconv.Itoa(int(p)) + ")"
}

// updateRun is one Update of one device: what it knows of the device's
// /5 and the observations that keep it current.
type updateRun struct {
	s        *Server
	ep       string
	log      *slog.Logger
	progress func(Progress)
	pmu      sync.Mutex // one progress call at a time
	phase    phase

	st     fwState
	events <-chan Registration // the device registered again
	tick   <-chan time.Time    // time to poll

	obsMu        sync.Mutex
	observations []*Observation

	// What noteState reported last.
	noted bool
	lastS fwobj.State
	lastR fwobj.Result
}

func (u *updateRun) report(p Progress) {
	p.Endpoint = u.ep
	u.s.noteProgress(p)
	if u.progress == nil {
		return
	}
	u.pmu.Lock()
	defer u.pmu.Unlock()
	u.progress(p)
}

// delivered reports bytes pushed, or served to a pulling device.
func (u *updateRun) delivered(sent, total int64) {
	u.report(Progress{Phase: "deliver", Sent: sent, Total: total, State: fwobj.StateUnknown, Result: fwobj.ResultUnknown})
}

func (u *updateRun) observe(ctx context.Context) {
	u.obsMu.Lock()
	defer u.obsMu.Unlock()
	for _, p := range []model.Path{pathState, pathResult} {
		o, err := u.s.Observe(ctx, u.ep, p, content.TextPlain, func(n Notification) {
			if v, ok := parseIntPayload(n.Content); ok {
				u.st.notified(n.Path, v)
			}
		})
		if err != nil {
			u.log.Debug("observe failed; polling instead", "path", p, "err", err)
			continue
		}
		u.observations = append(u.observations, o)
	}
}

// dropObservations cancels the observations concurrently; wait says
// whether to wait for the device's answers.
func (u *updateRun) dropObservations(wait bool) {
	u.obsMu.Lock()
	old := u.observations
	u.observations = nil
	u.obsMu.Unlock()
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

// refresh learns the current State and Update Result by observing them
// anew. A read would not do: the device notifies a change only when the
// value differs from what the observation last sent (RFC 7641 §4.5 lets
// it skip intermediate states), so after a read of a transient value
// (Downloading, between Idle and Idle with a failure) it may never say
// that the value went back. The answer to a new registration is both the
// current value and the base of the notifications that follow
// (RFC 7641 §3.3.1, §4.1). A path that cannot be observed is read.
func (u *updateRun) refresh(ctx context.Context) {
	u.dropObservations(true)
	u.observe(ctx)
	u.obsMu.Lock()
	n := len(u.observations)
	u.obsMu.Unlock()
	if n < 2 {
		_ = u.poll(ctx)
	}
}

// poll reads State and Update Result.
func (u *updateRun) poll(ctx context.Context) error {
	// One exchange may take MAX_TRANSMIT_WAIT under load (a fleet
	// updating at once loses datagrams); RequestTimeout allows for it.
	// A sleeping device is read when it wakes; the timeout counts from then.
	hctx, release, err := u.s.holding(ctx, u.ep, "read")
	if err != nil {
		return err
	}
	defer release()
	rctx, cancel := context.WithTimeout(hctx, u.s.requestTimeout())
	defer cancel()
	for _, p := range []model.Path{pathState, pathResult} {
		mark := u.st.readMark(p)
		c, err := u.s.Read(rctx, u.ep, p, content.TextPlain)
		if err != nil {
			return err
		}
		v, ok := parseIntPayload(c)
		if !ok {
			return fmt.Errorf("server: %s on %s: not an integer: %q", p, u.ep, c.Payload)
		}
		if !u.st.read(p, v, mark) {
			u.log.Debug("read overtaken by a notification; keeping the notified value", "path", p, "read", v)
		}
	}
	return nil
}

// known reports whether both values were read or notified
// (fwobj.StateUnknown and fwobj.ResultUnknown are negative).
func known(state fwobj.State, result fwobj.Result) bool {
	return state >= 0 && result >= 0
}

// noteState reports State and Update Result when they changed.
func (u *updateRun) noteState() (state fwobj.State, result fwobj.Result) {
	state, result = u.st.get()
	if !u.noted || state != u.lastS || result != u.lastR {
		u.noted, u.lastS, u.lastR = true, state, result
		if known(state, result) {
			u.log.Info("firmware state", "state", state.String(), "result", result.String())
			u.report(Progress{Phase: "state", State: state, Result: result})
		}
	}
	return state, result
}

// check reads the device's /5 and /5/0/9 before anything is sent: a
// device that is updating is left alone, a method it does not take is
// refused, and a previous download is dropped.
func (u *updateRun) check(ctx context.Context, method Method) (fwobj.Result, error) {
	u.phase = phaseReadState
	if err := u.poll(ctx); err != nil {
		return 0, updateError(u.ep, "reading firmware state", err)
	}
	u.phase = phaseCheckMethod
	if err := u.s.checkDeliveryMethod(ctx, u.ep, method); err != nil {
		return 0, err
	}
	state, result := u.st.get()
	switch state {
	case fwobj.StateUpdating:
		return result, fmt.Errorf("server: update %s: device is already updating", u.ep)
	case fwobj.StateDownloading, fwobj.StateDownloaded:
		// Object 5: an empty Package URI drops the previous package.
		u.log.Info("resetting previous download", "state", state.String())
		u.phase = phaseReset
		if err := u.s.Write(ctx, u.ep, pathURI, content.TextPlain, []byte{}, true); err != nil {
			return 0, updateError(u.ep, "dropping the previous package", err)
		}
	}
	return 0, nil
}

// deliver sends the package by method. undo, never nil, stops serving
// it: whatever the outcome, a package is served no longer than the
// update runs.
func (u *updateRun) deliver(ctx context.Context, pkgFile string, method Method) (undo func(), err error) {
	switch method {
	case Push:
		return func() {}, u.push(ctx, pkgFile)
	case PullCoAP, PullHTTP:
		return u.pull(ctx, pkgFile, method)
	}
	return func() {}, fmt.Errorf("server: update %s: %v not supported", u.ep, method)
}

// push writes the package to /5/0/0 with Block1.
func (u *updateRun) push(ctx context.Context, pkgFile string) error {
	u.phase = phasePush
	if err := u.s.Push(ctx, u.ep, pkgFile, u.delivered); err != nil {
		return updateError(u.ep, "", err)
	}
	return nil
}

// pull publishes the package and writes its URI to /5/0/1.
func (u *updateRun) pull(ctx context.Context, pkgFile string, method Method) (undo func(), err error) {
	u.phase = phasePublish
	im, err := u.s.Publish(pkgFile)
	if err != nil {
		return func() {}, err
	}
	undo = func() { u.s.Unpublish(im.ID) }
	scheme := "coap"
	if method == PullHTTP {
		scheme = "http"
	}
	uri, err := u.s.imageURI(u.ep, im, scheme)
	if err != nil {
		return undo, err
	}
	u.phase = phaseWriteURI
	// A pull's progress as the image servers see it.
	if stop, err := u.s.WatchImage(im.ID, u.ep, u.delivered); err == nil {
		undo = func() { stop(); u.s.Unpublish(im.ID) }
	}
	if err := u.s.Write(ctx, u.ep, pathURI, content.TextPlain, []byte(uri), true); err != nil {
		return undo, updateError(u.ep, "writing Package URI", err)
	}
	u.log.Info("package URI written", "uri", uri)
	u.report(Progress{Phase: "uri", URI: uri, State: fwobj.StateUnknown, Result: fwobj.ResultUnknown})
	return undo, nil
}

// execute executes Update (/5/0/2) on a device in State Downloaded. Only
// the device's refusal is an error: a device may restart before it
// answers.
func (u *updateRun) execute(ctx context.Context, state fwobj.State, result fwobj.Result) error {
	u.report(Progress{Phase: "execute", State: state, Result: result})
	u.phase = phaseExecute
	// The State seen so far is stale once Update runs. Forget it now, not
	// after the answer: the Updating notification can arrive before
	// Execute returns. The Result stays: it is not notified again unless
	// it changes, and without it the Updating State would go unreported.
	u.st.forgetState()
	// A device may restart before it answers; do not wait for that
	// answer longer than for a normal exchange.
	hctx, release, err := u.s.holding(ctx, u.ep, "execute")
	if err != nil {
		return updateError(u.ep, "executing Update", err)
	}
	ectx, cancel := context.WithTimeout(hctx, 10*time.Second)
	err = u.s.Execute(ectx, u.ep, pathUpdate, "")
	cancel()
	release()
	var ce *CodeError
	if errors.As(err, &ce) {
		return updateError(u.ep, "executing Update", err)
	}
	if err != nil {
		// The device may have restarted before answering.
		u.log.Warn("no answer to Update; waiting for the device", "err", err)
	}
	u.log.Info("update executed")
	u.phase = phaseWaitOutcome
	return nil
}

// waitFor waits until State and Update Result are known and done says
// so, following notifications, polls and new registrations. It returns
// them, or the last ones seen and the error of a timeout or cancellation
// that names the phase.
func (u *updateRun) waitFor(ctx context.Context, done func(fwobj.State, fwobj.Result) bool) (fwobj.State, fwobj.Result, error) {
	for {
		state, result := u.noteState()
		if known(state, result) && done(state, result) {
			return state, result, nil
		}
		select {
		case <-ctx.Done():
			why := "timed out"
			if ctx.Err() == context.Canceled {
				why = "cancelled"
			}
			msg := fmt.Sprintf("server: update %s: %s %s", u.ep, why, u.phase)
			if state >= 0 {
				msg += " (device state " + state.String() + ")"
			}
			return state, result, &wrapError{msg: msg, err: ctx.Err()}
		case <-u.st.changed:
		case reg := <-u.events:
			u.registered(ctx, reg)
		case <-u.tick:
			if u.s.Asleep(u.ep) {
				// A sleeping device notifies once it wakes; a
				// poll would only queue behind that.
				continue
			}
			if err := u.poll(ctx); err != nil {
				u.log.Debug("polling firmware state", "err", err)
			}
		}
	}
}

// registered follows a new registration of the device: it restarted, and
// its old observations are gone (RFC 7641, 3.6).
func (u *updateRun) registered(ctx context.Context, reg Registration) {
	// What the old program notified before it went (Updating) came
	// first; select may have picked the registration over it.
	u.noteState()
	u.log.Info("device registered again during update", "addr", reg.Addr)
	u.report(Progress{Phase: "registered", State: fwobj.StateUnknown, Result: fwobj.ResultUnknown})
	// The old observations went with the old process; cancelling them
	// only stops the local callbacks, so do not wait.
	u.dropObservations(false)
	u.st.forget()
	_ = u.poll(ctx)
	u.observe(ctx)
}

// finish reports the outcome: nil for Success, else ErrUpdateFailed.
func (u *updateRun) finish(state fwobj.State, r fwobj.Result) (fwobj.Result, error) {
	u.report(Progress{Phase: "done", State: state, Result: r})
	if r == fwobj.ResultSuccess {
		return r, nil
	}
	return r, fmt.Errorf("%w: result %d (%s)", ErrUpdateFailed, int(r), r)
}

// logOutcome logs how an update ended: success, the device's failure
// result, a timeout or cancellation and in which phase, or another error.
func logOutcome(log *slog.Logger, p phase, r fwobj.Result, err error) {
	switch {
	case err == nil:
		log.Info("firmware update succeeded", "result", int(r))
	case errors.Is(err, ErrUpdateFailed):
		log.Warn("firmware update failed", "result", int(r), "reason", r.String())
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn("firmware update timed out", "phase", p.String(), "err", err)
	case errors.Is(err, context.Canceled):
		log.Warn("firmware update cancelled", "phase", p.String())
	default:
		log.Warn("firmware update failed", "phase", p.String(), "err", err)
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

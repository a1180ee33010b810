package campaign

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// Run runs the campaigns until ctx ends, then waits for the updates it
// started to return (their contexts end with ctx) and returns nil. The
// records of updates cut short stay "running": the next Run verifies
// those devices instead of updating them again.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.ctx != nil {
		e.mu.Unlock()
		return errors.New("campaign: engine already running")
	}
	e.ctx = ctx
	e.mu.Unlock()
	go e.notifier(ctx)
	tick := time.NewTicker(e.pollInterval())
	defer tick.Stop()
	for {
		e.step()
		select {
		case <-ctx.Done():
			e.wg.Wait()
			return nil
		case <-tick.C:
		case <-e.kick:
		}
	}
}

// step starts what may start and closes what is finished, in every
// campaign.
func (e *Engine) step() {
	regs := map[string]server.Registration{}
	for _, r := range e.srv.Registrations() {
		regs[r.Endpoint] = r
	}
	now := e.now().UTC()
	recs := map[string][]byte{}
	var starts []start
	var changed []string
	e.mu.Lock()
	for id, c := range e.camps {
		n := len(recs)
		ch, s := e.stepCampaign(c, regs, now, recs)
		starts = append(starts, s...)
		if ch || len(recs) != n || len(s) > 0 {
			changed = append(changed, id)
		}
	}
	if len(recs) > 0 {
		// Written before any device starts: after a crash, a device
		// whose update may have begun is known as such.
		if err := e.store.PutRecords(bucketCampaigns, recs); err != nil {
			for _, s := range starts {
				s.undo()
			}
			e.mu.Unlock()
			e.log.Error("storing campaigns; no device starts until it works", "err", err)
			return
		}
	}
	for _, s := range starts {
		s.run()
	}
	e.mu.Unlock()
	for _, id := range changed {
		e.changed(id)
	}
}

// start is a device's goroutine to start once the step's records are
// stored, and how to forget it if they cannot be.
type start struct{ run, undo func() }

// stepCampaign decides for one campaign; e.mu held. It returns whether
// the campaign itself changed and the devices to start once recs are
// stored.
func (e *Engine) stepCampaign(c *camp, regs map[string]server.Registration, now time.Time, recs map[string][]byte) (changed bool, starts []start) {
	id := c.meta.ID
	// Devices running before a restart are verified whatever the state.
	for ep := range c.check {
		d := c.byEP[ep]
		delete(c.check, ep)
		c.run++
		starts = append(starts, start{
			run:  func() { e.goDevice(c, d, e.verify) },
			undo: func() { c.run--; c.check[ep] = true },
		})
	}
	if c.meta.State != StateRunning && c.meta.State != StatePaused {
		return false, starts
	}
	if !now.Before(c.meta.Deadline) {
		// Paused or not, nothing starts after the deadline.
		for _, d := range c.devs {
			if d.Status == DevicePending || d.Status == DeviceWaiting {
				d.Status, d.Error, d.Updated = DeviceExpired, "the deadline passed before the device could be updated", now
				recs[devKey(id, d.Endpoint)] = devRecord(d)
			}
		}
	}
	v := c.view()
	if c.meta.State == StatePaused && !now.Before(c.meta.Deadline) && v.Counts.Running == 0 && c.run == 0 {
		c.meta.State, c.meta.Finished = StateDone, now
		recs[campKey(id)] = c.metaRecord()
		return true, starts
	}
	if c.meta.State != StateRunning {
		return false, starts
	}
	for _, w := range v.Waves {
		if c.overThreshold(w) {
			c.meta.State = StatePaused
			c.meta.PauseReason = fmt.Sprintf("wave %d: %d of %d devices failed, more than the threshold of %g%%", w.Index, w.Failed, w.Devices, *c.meta.Rollout.FailureThresholdPercent)
			recs[campKey(id)] = c.metaRecord()
			e.log.Warn("campaign paused", "id", id, "reason", c.meta.PauseReason)
			return true, starts
		}
	}
	if v.Counts.Pending == 0 && v.Counts.Running == 0 && c.run == 0 {
		c.meta.State, c.meta.Finished = StateDone, now
		recs[campKey(id)] = c.metaRecord()
		e.log.Info("campaign done", "id", id, "succeeded", v.Counts.Succeeded, "failed", v.Counts.Failed, "skipped", v.Counts.Skipped, "expired", v.Counts.Expired)
		return true, starts
	}
	// The current wave is the first with a device pending or running:
	// later waves wait for it; a device that waits for its next
	// registration does not hold them up.
	cur := len(v.Waves) - 1
	for _, d := range c.devs {
		if d.Status == DevicePending || d.Status == DeviceRunning {
			cur = min(cur, d.Wave)
		}
	}
	for _, d := range c.devs {
		if c.run >= c.meta.Rollout.Concurrency {
			break
		}
		if d.Wave > cur || (d.Status != DevicePending && d.Status != DeviceWaiting) {
			continue
		}
		reg, ok := regs[d.Endpoint]
		if !ok {
			if d.Status == DevicePending {
				d.Status, d.Phase, d.Error, d.Updated = DeviceWaiting, "", "not registered at its turn; updated when it registers", now
				recs[devKey(id, d.Endpoint)] = devRecord(d)
			}
			continue
		}
		if d.Status == DeviceWaiting && !reg.Updated.After(c.seen[d.Endpoint]) {
			continue // unreachable since it last registered or updated
		}
		old := *d
		d.Status, d.Phase, d.Error, d.Started, d.Updated = DeviceRunning, "check", "", now, now
		d.Attempts++
		recs[devKey(id, d.Endpoint)] = devRecord(d)
		c.run++
		starts = append(starts, start{
			run:  func() { e.goDevice(c, d, e.update) },
			undo: func() { *d = old; c.run-- },
		})
	}
	return false, starts
}

// goDevice runs f for d on a goroutine of its own; e.mu held.
func (e *Engine) goDevice(c *camp, d *Device, f func(ctx context.Context, c *camp, ep string)) {
	ctx := e.ctx
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			c.run--
			e.mu.Unlock()
			e.wake()
		}()
		f(ctx, c, d.Endpoint)
	}()
}

// outcome is how one device's turn ended.
type outcome struct {
	status string
	result fwobj.Result
	err    string
	seen   time.Time // DeviceWaiting: the registration it could not be reached at
}

// finish records d's outcome and stores it, unless the engine is
// stopping: a device cut short stays "running" in the store.
func (e *Engine) finish(ctx context.Context, c *camp, ep string, o outcome) {
	if e.ctx.Err() != nil { // ctx is derived from it
		return
	}
	e.mu.Lock()
	d := c.byEP[ep]
	now := e.now().UTC()
	if c.meta.State == StateAborted && o.status == DeviceWaiting {
		o.status, o.err = DeviceSkipped, "campaign aborted"
	}
	d.Status, d.Error, d.Updated = o.status, o.err, now
	if o.result >= 0 {
		d.Result, d.ResultName = int(o.result), o.result.String()
	}
	if o.status == DeviceWaiting {
		c.seen[ep] = o.seen
		d.Phase = ""
	}
	err := e.store.PutRecords(bucketCampaigns, map[string][]byte{devKey(c.meta.ID, ep): devRecord(d)})
	e.mu.Unlock()
	if err != nil {
		e.log.Error("storing a device's outcome", "campaign", c.meta.ID, "ep", ep, "err", err)
	}
	e.log.Info("campaign device", "campaign", c.meta.ID, "ep", ep, "status", o.status, "result", int(o.result), "err", o.err)
	e.changed(c.meta.ID)
}

// update checks the target on ep and updates it.
func (e *Engine) update(ctx context.Context, c *camp, ep string) {
	e.mu.Lock()
	meta := c.meta
	e.mu.Unlock()
	reg, _ := e.srv.Registration(ep)
	ctx, cancel := context.WithTimeout(ctx, e.deviceTimeout())
	defer cancel()
	if ok, why, err := e.matches(ctx, ep, meta.Target); err != nil {
		e.finish(ctx, c, ep, outcome{status: DeviceWaiting, result: -1, err: "checking the target: " + err.Error(), seen: reg.Updated})
		return
	} else if !ok {
		e.finish(ctx, c, ep, outcome{status: DeviceSkipped, result: -1, err: why})
		return
	}
	method, _ := serverMethod(meta.Method)
	reached := false
	res, err := e.srv.Update(ctx, ep, e.packageFile(meta.Package), method, func(p server.Progress) {
		reached = true // the progress callback runs on one goroutine at a time
		e.progress(c, p)
	})
	var te *server.TimeoutError
	switch {
	case err == nil:
		e.finish(ctx, c, ep, outcome{status: DeviceSucceeded, result: res})
	case errors.Is(err, server.ErrUpdateFailed):
		e.finish(ctx, c, ep, outcome{status: DeviceFailed, result: res, err: err.Error()})
	case !reached && (errors.Is(err, server.ErrNotRegistered) || errors.As(err, &te) || errors.Is(err, server.ErrUpdateRunning)):
		// Nothing reached the device: it went offline, or another
		// update of it (by hand, or another campaign's) is running and
		// will end with the device registering again. Its next
		// registration tries again; neither is the package's failure.
		e.finish(ctx, c, ep, outcome{status: DeviceWaiting, result: -1, err: err.Error(), seen: reg.Updated})
	case errors.Is(err, context.DeadlineExceeded):
		e.finish(ctx, c, ep, outcome{status: DeviceFailed, result: -1,
			err: fmt.Sprintf("no outcome within %s: %v", e.deviceTimeout(), err)})
	default:
		e.finish(ctx, c, ep, outcome{status: DeviceFailed, result: -1, err: err.Error()})
	}
}

// progress follows an update's reports.
func (e *Engine) progress(c *camp, p server.Progress) {
	e.mu.Lock()
	d := c.byEP[p.Endpoint]
	if d == nil {
		e.mu.Unlock()
		return
	}
	d.Phase, d.Updated = p.Phase, e.now().UTC()
	if p.Phase == "deliver" {
		d.Bytes, d.Total = p.Sent, p.Total
	}
	if p.State >= 0 {
		d.State = p.State.String()
	}
	if p.Result >= 0 {
		d.Result, d.ResultName = int(p.Result), p.Result.String()
	}
	e.mu.Unlock()
	e.changed(c.meta.ID)
}

var pathFirmwareVersion = model.NewPath(3, 0, 3)

// matches checks the target's firmware version and resource on ep.
func (e *Engine) matches(ctx context.Context, ep string, t Target) (ok bool, why string, err error) {
	if t.FirmwareVersion != "" {
		v, err := e.readText(ctx, ep, pathFirmwareVersion)
		if err != nil {
			return false, "", err
		}
		if v != t.FirmwareVersion {
			return false, fmt.Sprintf("firmware version %q, the target is %q", v, t.FirmwareVersion), nil
		}
	}
	if r := t.Resource; r != nil {
		p, _ := model.ParsePath(r.Path)
		v, err := e.readText(ctx, ep, p)
		var ce *server.CodeError
		if errors.As(err, &ce) {
			return false, fmt.Sprintf("%s: %v", r.Path, err), nil // 4.04: it has no such resource
		}
		if err != nil {
			return false, "", err
		}
		if v != r.Equals {
			return false, fmt.Sprintf("%s is %q, the target is %q", r.Path, v, r.Equals), nil
		}
	}
	return true, "", nil
}

func (e *Engine) readText(ctx context.Context, ep string, p model.Path) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := e.srv.Read(rctx, ep, p, content.TextPlain)
	if err != nil {
		return "", err
	}
	if c.Format != content.TextPlain {
		return "", fmt.Errorf("campaign: %s on %s: not plain text (format %d)", p, ep, c.Format)
	}
	return string(c.Payload), nil
}

var (
	pathState  = model.NewPath(fwobj.ObjectID, 0, fwobj.ResState)
	pathResult = model.NewPath(fwobj.ObjectID, 0, fwobj.ResUpdateResult)
	pathUpdate = model.NewPath(fwobj.ObjectID, 0, fwobj.ResUpdate)
)

// verify follows a device whose update had started before the engine
// restarted: it reads State, Update Result and firmware version while
// the device is registered, and never delivers the package again. A
// device the update never reached (Idle, Initial) waits for its turn
// again.
func (e *Engine) verify(ctx context.Context, c *camp, ep string) {
	e.mu.Lock()
	started, pkg, meta := c.byEP[ep].Started, e.packages[c.meta.Package], c.meta
	e.mu.Unlock()
	end := started.Add(e.deviceTimeout())
	executed := false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if !e.now().Before(end) {
			e.finish(ctx, c, ep, outcome{status: DeviceFailed, result: -1,
				err: fmt.Sprintf("no outcome within %s of the update's start (verified after a restart)", e.deviceTimeout())})
			return
		}
		timer.Reset(e.pollInterval())
		if _, ok := e.srv.Registration(ep); !ok {
			continue
		}
		st, res, fw, err := e.readFirmware(ctx, ep)
		if err != nil {
			e.log.Debug("verifying an update after a restart", "ep", ep, "err", err)
			continue
		}
		e.mu.Lock()
		d := c.byEP[ep]
		d.State, d.Result, d.ResultName, d.Firmware, d.Updated = st.String(), int(res), res.String(), fw, e.now().UTC()
		e.mu.Unlock()
		e.changed(c.meta.ID)
		switch {
		case st == fwobj.StateIdle && res == fwobj.ResultConnectionLost && meta.Method != MethodPush:
			// The device pulled from this server's image port, which the
			// restart took away mid-download: not the package's failure.
			// It tries again at its turn; nothing was applied.
			e.finish(ctx, c, ep, outcome{status: DeviceWaiting, result: res, err: "the download was cut by the server's restart; tried again"})
			return
		case res > fwobj.ResultSuccess:
			e.finish(ctx, c, ep, outcome{status: DeviceFailed, result: res, err: "update failed (verified after a restart)"})
			return
		case st == fwobj.StateIdle && res == fwobj.ResultSuccess:
			if pkg.Version != "" && fw != "" && fw != pkg.Version {
				// Success of an earlier update, or firmware that does
				// not say its version: not updated again, for an
				// operator to look at.
				e.finish(ctx, c, ep, outcome{status: DeviceFailed, result: res,
					err: fmt.Sprintf("the device reports Success but firmware version %q, the package's is %q (verified after a restart)", fw, pkg.Version)})
				return
			}
			e.finish(ctx, c, ep, outcome{status: DeviceSucceeded, result: res})
			return
		case st == fwobj.StateIdle && res == fwobj.ResultInitial:
			e.finish(ctx, c, ep, outcome{status: DeviceWaiting, result: res, err: "the update had not reached the device before the restart"})
			return
		case st == fwobj.StateDownloaded && !executed:
			// The package arrived but Update was never executed: that
			// is the same update going on, not a second one.
			ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := e.srv.Execute(ectx, ep, pathUpdate, "")
			cancel()
			var ce *server.CodeError
			if errors.As(err, &ce) {
				e.finish(ctx, c, ep, outcome{status: DeviceFailed, result: res, err: "executing Update after a restart: " + err.Error()})
				return
			}
			executed = true
		}
	}
}

// readFirmware reads /5/0/3, /5/0/5 and, best effort, /3/0/3.
func (e *Engine) readFirmware(ctx context.Context, ep string) (fwobj.State, fwobj.Result, string, error) {
	s, err := e.readText(ctx, ep, pathState)
	if err != nil {
		return 0, 0, "", err
	}
	r, err := e.readText(ctx, ep, pathResult)
	if err != nil {
		return 0, 0, "", err
	}
	si, err1 := strconv.Atoi(strings.TrimSpace(s))
	ri, err2 := strconv.Atoi(strings.TrimSpace(r))
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, "", fmt.Errorf("campaign: firmware state of %s: %w", ep, err)
	}
	fw, _ := e.readText(ctx, ep, pathFirmwareVersion)
	return fwobj.State(si), fwobj.Result(ri), fw, nil
}

package fwupdate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Resource IDs of the Firmware Update object, version 1.1 (see fwobj).
const (
	ResPackage          = fwobj.ResPackage
	ResPackageURI       = fwobj.ResPackageURI
	ResUpdate           = fwobj.ResUpdate
	ResState            = fwobj.ResState
	ResUpdateResult     = fwobj.ResUpdateResult
	ResPkgName          = fwobj.ResPkgName
	ResPkgVersion       = fwobj.ResPkgVersion
	ResProtocolSupport  = fwobj.ResProtocolSupport
	ResDeliveryMethod   = fwobj.ResDeliveryMethod
	ResCancel           = fwobj.ResCancel
	ResSeverity         = fwobj.ResSeverity
	ResLastStateChange  = fwobj.ResLastStateChange
	ResMaxDeferPeriod   = fwobj.ResMaxDeferPeriod
	ObjectID            = fwobj.ObjectID
	ObjectVersion       = fwobj.ObjectVersion
	maxPackageURILength = 255
)

// Severity values of /5/0/11.
const (
	SeverityCritical  = fwobj.SeverityCritical
	SeverityMandatory = fwobj.SeverityMandatory
	SeverityOptional  = fwobj.SeverityOptional
)

// ErrState is returned by SetResult when the object is not Updating.
var ErrState = errors.New("fwupdate: not in a state that takes this")

// Config configures the module. The zero value works: state in memory,
// no size limit, default download settings.
type Config struct {
	// Store keeps the state across reboots; nil keeps it in memory only.
	// Use FileStore for a device that must report true results after a reboot.
	Store Store
	// Initial, if set, is the state to start from instead of what Store
	// holds: what the application knows of the last boot.
	Initial *Persisted
	// MaxPackageSize refuses bigger packages: a push gets 4.13 with Size1,
	// and either way the result is Not enough storage (2). 0 means no limit.
	MaxPackageSize int64
	// Download tunes pull downloads. URI, ETag, Offset, Security, Tx and
	// Timeout are set by the module; the rest is taken as given.
	Download download.Request
	// Progress, if set, is called after each chunk is stored, with the
	// bytes held and the total size (-1 if unknown).
	Progress func(written, total int64)
	// Logger; default the client's logger.
	Logger *slog.Logger
}

// Object is the Firmware Update object (/5), version 1.1. Install adds it
// to a client.
type Object struct {
	c   *lwm2m.Client
	h   Handlers
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	p         Persisted
	written   int64 // bytes passed to StreamWrite for the current package
	total     int64
	savedAt   time.Time
	savedOff  int64
	stream    *pushStream
	dl        *pull // running pull download, nil if none
	deferT    *time.Timer
	suspended bool
	closed    bool
}

// Install adds the Firmware Update object to c, with the state from
// cfg.Initial or cfg.Store. An interrupted pull download resumes at once;
// a push cannot resume and ends with Connection lost (4). If the state is
// Updating, the application reports how the upgrade ended with SetResult.
func Install(c *lwm2m.Client, h Handlers, cfg Config) (*Object, error) {
	if cfg.Store == nil {
		cfg.Store = &MemoryStore{}
	}
	log := cfg.Logger
	if log == nil {
		log = c.Logger()
	}
	o := &Object{c: c, h: h, cfg: cfg, log: log.With("object", "/5"), total: -1}
	if cfg.Initial != nil {
		o.p = *cfg.Initial
	} else {
		p, err := cfg.Store.Load()
		if err != nil && !errors.Is(err, ErrNoState) {
			return nil, err
		}
		o.p = p
	}
	if o.p.Severity < SeverityCritical || o.p.Severity > SeverityOptional {
		o.p.Severity = SeverityMandatory
	}
	if o.p.LastStateChange.IsZero() {
		o.p.LastStateChange = time.Now()
	}
	if err := c.AddObject(o); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch o.p.State {
	case StateDownloading:
		if o.p.URI == "" {
			o.log.Warn("push download interrupted by a restart")
			o.transition(evFailed, ResultConnectionLost)
			break
		}
		o.log.Info("resuming download after restart", "uri", o.p.URI, "offset", o.p.Offset)
		o.startPull(o.p.URI, o.p.ETag, o.p.Offset)
	case StateDownloaded, StateUpdating:
		o.written = o.p.Offset
	}
	o.save()
	return o, nil
}

// State returns the current State and Update Result.
func (o *Object) State() (State, Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.p.State, o.p.Result
}

// Persisted returns a copy of the state the module keeps.
func (o *Object) Persisted() Persisted {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.p
}

// SetResult reports how an upgrade ended, for an upgrade that finishes
// after PerformUpgrade returned or after a reboot: ResultSuccess moves to
// Idle; a failure moves back to Downloaded so the image can be retried.
func (o *Object) SetResult(r Result) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.p.State != StateUpdating {
		return fmt.Errorf("%w: SetResult(%v) in %v", ErrState, r, o.p.State)
	}
	if r == ResultSuccess {
		o.transition(evUpgradeOK, 0)
	} else {
		if r == ResultInitial {
			r = ResultUpdateFailed
		}
		o.transition(evUpgradeFailed, r)
	}
	return nil
}

// transition applies ev under o.mu: Reset if the rule says so, then the
// new State and Result, persisted and notified. It returns the rule.
func (o *Object) transition(ev event, given Result) rule {
	r := lookup(o.p.State, ev)
	if r.refused() {
		return r
	}
	if r.reset {
		o.resetLocked()
	}
	old := o.p
	o.p.State = r.to
	switch {
	case r.given:
		o.p.Result = given
	case !r.keep:
		o.p.Result = r.result
	}
	if o.p.State == StateIdle {
		o.p.URI, o.p.ETag, o.p.Offset = "", nil, 0
		o.p.PkgName, o.p.PkgVersion = "", ""
	}
	if o.p.State == StateDownloaded && old.State == StateDownloading {
		if pi, ok := o.h.(PackageInfo); ok {
			o.p.PkgName, o.p.PkgVersion = pi.PackageName(), pi.PackageVersion()
		}
		o.p.Offset = o.written
	}
	if o.p.State != old.State {
		o.p.LastStateChange = time.Now()
	}
	o.save()
	if o.p.State != old.State || o.p.Result != old.Result {
		o.log.Info(""+old.State.String()+" -> "+o.p.State.String(), "result", o.p.Result.String())
	}
	o.notify(old)
	return r
}

func (o *Object) resetLocked() {
	o.stream = nil
	o.written, o.total = 0, -1
	if o.deferT != nil {
		o.deferT.Stop()
		o.deferT = nil
	}
	if err := o.h.Reset(); err != nil {
		o.log.Warn("reset handler failed", "err", err)
	}
}

func (o *Object) save() {
	o.savedAt, o.savedOff = time.Now(), o.p.Offset
	if err := o.cfg.Store.Save(o.p); err != nil {
		o.log.Error("cannot persist state", "err", err)
	}
}

// notify tells observers what changed since old.
func (o *Object) notify(old Persisted) {
	for _, ch := range []struct {
		res     uint16
		changed bool
	}{
		{ResState, old.State != o.p.State},
		{ResUpdateResult, old.Result != o.p.Result},
		{ResPkgName, old.PkgName != o.p.PkgName},
		{ResPkgVersion, old.PkgVersion != o.p.PkgVersion},
		{ResLastStateChange, !old.LastStateChange.Equal(o.p.LastStateChange)},
	} {
		if ch.changed {
			o.c.Changed(model.NewPath(ObjectID, 0, ch.res))
		}
	}
}

// ID implements lwm2m.Object.
func (o *Object) ID() uint16 { return ObjectID }

// Version implements lwm2m.Versioner: the object registers as </5>;ver=1.1.
func (o *Object) Version() string { return ObjectVersion }

func (o *Object) Instances() []uint16 { return instance0 }

// instance0 is the single instance of /5; the client asks for it on every
// block of a push.
var instance0 = []uint16{0}

var resources = []lwm2m.Resource{
	{ID: ResPackage, Type: model.MustCoreType(ObjectID, ResPackage), Ops: lwm2m.OpWrite},
	{ID: ResPackageURI, Type: model.MustCoreType(ObjectID, ResPackageURI), Ops: lwm2m.OpRW},
	{ID: ResUpdate, Type: model.MustCoreType(ObjectID, ResUpdate), Ops: lwm2m.OpExecute},
	{ID: ResState, Type: model.MustCoreType(ObjectID, ResState), Ops: lwm2m.OpRead},
	{ID: ResUpdateResult, Type: model.MustCoreType(ObjectID, ResUpdateResult), Ops: lwm2m.OpRead},
	{ID: ResPkgName, Type: model.MustCoreType(ObjectID, ResPkgName), Ops: lwm2m.OpRead},
	{ID: ResPkgVersion, Type: model.MustCoreType(ObjectID, ResPkgVersion), Ops: lwm2m.OpRead},
	{ID: ResProtocolSupport, Type: model.MustCoreType(ObjectID, ResProtocolSupport), Ops: lwm2m.OpRead, Multiple: true},
	{ID: ResDeliveryMethod, Type: model.MustCoreType(ObjectID, ResDeliveryMethod), Ops: lwm2m.OpRead},
	{ID: ResCancel, Type: model.MustCoreType(ObjectID, ResCancel), Ops: lwm2m.OpExecute},
	{ID: ResSeverity, Type: model.MustCoreType(ObjectID, ResSeverity), Ops: lwm2m.OpRW},
	{ID: ResLastStateChange, Type: model.MustCoreType(ObjectID, ResLastStateChange), Ops: lwm2m.OpRead},
	{ID: ResMaxDeferPeriod, Type: model.MustCoreType(ObjectID, ResMaxDeferPeriod), Ops: lwm2m.OpRW},
}

func (o *Object) Resources(inst uint16) []lwm2m.Resource {
	if inst != 0 {
		return nil
	}
	return resources
}

// protocols maps download schemes to /5/0/8 values.
var protocols = map[string]int64{"coap": 0, "coaps": 1, "http": 2, "https": 3, "coap+tcp": 4, "coaps+tcp": 5}

func (o *Object) Read(_ context.Context, res model.Path) ([]model.Record, error) {
	if res.Instance() != 0 {
		return nil, lwm2m.ErrNotFound
	}
	o.mu.Lock()
	p := o.p
	o.mu.Unlock()
	one := func(v model.Value) ([]model.Record, error) { return []model.Record{{Path: res, Value: v}}, nil }
	switch res.Resource() {
	case ResPackageURI:
		return one(model.String(p.URI))
	case ResState:
		return one(model.Int(int64(p.State)))
	case ResUpdateResult:
		return one(model.Int(int64(p.Result)))
	case ResPkgName:
		return one(model.String(p.PkgName))
	case ResPkgVersion:
		return one(model.String(p.PkgVersion))
	case ResProtocolSupport:
		var recs []model.Record
		for i, s := range download.Schemes() {
			if v, ok := protocols[s]; ok {
				recs = append(recs, model.Record{Path: res.Append(uint16(i)), Value: model.Int(v)})
			}
		}
		return recs, nil
	case ResDeliveryMethod:
		return one(model.Int(2)) // pull and push
	case ResSeverity:
		return one(model.Int(int64(p.Severity)))
	case ResLastStateChange:
		return one(model.Time(p.LastStateChange))
	case ResMaxDeferPeriod:
		return one(model.Uint(uint64(p.MaxDeferPeriod)))
	}
	return nil, lwm2m.ErrMethodNotAllowed
}

// Write implements lwm2m.Writer: a small Package, the Package URI,
// Severity and Maximum Defer Period.
func (o *Object) Write(ctx context.Context, p model.Path, recs []model.Record) error {
	if len(recs) != 1 || p.Len() != 3 {
		return lwm2m.ErrBadRequest
	}
	v := recs[0].Value
	switch p.Resource() {
	case ResPackage:
		return o.writePackage(ctx, v.Bytes)
	case ResPackageURI:
		return o.writeURI(v.Str)
	case ResSeverity:
		if v.Int < SeverityCritical || v.Int > SeverityOptional {
			return lwm2m.ErrBadRequest
		}
		o.mu.Lock()
		o.p.Severity = int(v.Int)
		o.save()
		o.mu.Unlock()
		return nil
	case ResMaxDeferPeriod:
		if v.Uint > 1<<32-1 {
			return lwm2m.ErrBadRequest
		}
		o.mu.Lock()
		o.p.MaxDeferPeriod = uint32(v.Uint)
		o.save()
		o.mu.Unlock()
		return nil
	}
	return lwm2m.ErrMethodNotAllowed
}

// isResetPackage reports an empty or single-"\0" Package, which resets
// (OMA Object 5, resource 0; the transition table in state.go).
func isResetPackage(b []byte) bool { return len(b) == 0 || (len(b) == 1 && b[0] == 0) }

// writePackage takes a Package write that came without Block1.
func (o *Object) writePackage(ctx context.Context, b []byte) error {
	if isResetPackage(b) {
		return o.resetBy(evPackageReset)
	}
	s, err := o.OpenStream(ctx, model.NewPath(ObjectID, 0, ResPackage), int64(len(b)))
	if err != nil {
		return err
	}
	if err := s.Write(b); err != nil {
		return err
	}
	return s.Close()
}

// resetBy stops any download and applies a reset event.
func (o *Object) resetBy(ev event) error {
	o.stopPull()
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.transition(ev, 0)
	return r.err
}

// validateURI checks a Package URI and says which result a bad one gets:
// the resource's length limit (OMA Object 5: 0-255 bytes), then what the
// download would refuse before any traffic (download.ValidateURI: a
// missing host, a port outside 1-65535, an unsupported scheme).
func validateURI(s string) (Result, error) {
	if len(s) > maxPackageURILength || !utf8.ValidString(s) || strings.ContainsAny(s, " \t\r\n") {
		return ResultInvalidURI, fmt.Errorf("package URI is not a valid URI of at most %d bytes", maxPackageURILength)
	}
	if err := download.ValidateURI(s); err != nil {
		if errors.Is(err, download.ErrUnsupportedScheme) {
			return ResultUnsupportedProtocol, err
		}
		return ResultInvalidURI, err
	}
	return ResultInitial, nil
}

func (o *Object) writeURI(s string) error {
	if s == "" {
		return o.resetBy(evURIEmpty)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if res, err := validateURI(s); err != nil {
		// The client logs the refusal with this reason, rate-limited; the
		// transition logs the new Update Result once.
		if cerr := o.transition(evURIBad, res).err; cerr != nil {
			return fmt.Errorf("%w: %w", cerr, err)
		}
		return nil
	}
	r := o.transition(evURI, 0)
	if r.refused() {
		return r.err
	}
	o.p.URI = s
	o.save()
	o.startPull(s, nil, 0)
	return nil
}

// Execute implements lwm2m.Executor: Update and Cancel.
func (o *Object) Execute(ctx context.Context, res model.Path, args string) error {
	switch res.Resource() {
	case ResUpdate:
		return o.update()
	case ResCancel:
		o.mu.Lock()
		st := o.p.State
		o.mu.Unlock()
		if st != StateDownloading && st != StateDownloaded {
			return lwm2m.ErrMethodNotAllowed
		}
		return o.resetBy(evCancel)
	}
	return lwm2m.ErrMethodNotAllowed
}

// upgradeDelay lets the 2.04 to Update leave before PerformUpgrade, which
// may re-exec or reboot.
const upgradeDelay = 100 * time.Millisecond

func (o *Object) update() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.transition(evUpdate, 0)
	if r.refused() {
		return r.err
	}
	go o.upgradeWhenNotified()
	return nil
}

// notifyWait bounds the wait for the Updating notification: two
// notifications (the one in flight and Updating) each given up on after
// MAX_TRANSMIT_WAIT, 93 s with RFC 7252's defaults.
const notifyWait = 200 * time.Second

// upgradeWhenNotified runs the upgrade once observers of State have been
// told of Updating (acknowledged, or given up on), as Anjay schedules it:
// the upgrade may re-exec or reboot, and a server that never heard of
// Updating cannot tell an upgrade from a failure.
func (o *Object) upgradeWhenNotified() {
	time.Sleep(upgradeDelay) // let the 2.04 to Update leave
	ctx, cancel := context.WithTimeout(context.Background(), notifyWait)
	defer cancel()
	if err := o.c.WaitNotified(ctx, model.NewPath(ObjectID, 0, ResState)); err != nil {
		o.log.Warn("upgrading before the server acknowledged Updating", "err", err)
	}
	o.performUpgrade()
}

func (o *Object) performUpgrade() {
	err := o.h.PerformUpgrade(context.Background())
	if err == nil {
		return // under way; SetResult or the next boot tells the outcome
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.p.State != StateUpdating {
		return
	}
	res := resultOf(err, ResultUpdateFailed)
	if res != ResultDeferred {
		o.log.Warn("upgrade failed", "err", err)
	}
	o.transition(evUpgradeFailed, res)
	if res == ResultDeferred && o.p.MaxDeferPeriod > 0 {
		// The server allows deferring only this long (/5/0/13).
		o.deferT = time.AfterFunc(time.Duration(o.p.MaxDeferPeriod)*time.Second, func() {
			if err := o.update(); err != nil {
				o.log.Warn("deferred upgrade could not start", "err", err)
			}
		})
	}
}

// Close stops a running download without changing the State, so that the
// next Install resumes it. Call it when the client shuts down.
func (o *Object) Close() {
	o.stopPull()
	o.mu.Lock()
	o.closed = true
	o.p.Offset = o.written
	if o.p.State == StateDownloading && o.p.URI != "" {
		o.save()
	}
	o.mu.Unlock()
}

package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/atomicfile"
	"github.com/lwm2m-fota/lwm2m/internal/writeback"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

// fileDevice is the reference device's side of the Firmware Update object.
// A package streams through an fwpkg.Verifier into package.part, which
// holds nothing until the header (and its signature) has been checked.
// Update copies the payload over the program (when it is an executable for
// this platform) or over firmware.bin, keeping the previous program beside
// it, and asks the supervisor (supervise.go) to start the new one on trial.
type fileDevice struct {
	dir        string
	exe        string // the running program, replaced by an executable payload
	trusted    ed25519.PublicKey
	maxPayload int64
	log        *slog.Logger
	restart    func() // ends this process so that the supervisor starts the program again
	crashAt    string // test hook: SIGKILL the device at this step (LWM2M_CRASH_AT)

	mu        sync.Mutex
	f         *os.File // package.part while a package arrives
	w         *writeback.Writer
	v         *fwpkg.Verifier
	head      []byte // the package's first bytes, until the header is stored
	headDone  bool   // the header is in package.part
	replaying bool   // StreamResume is hashing the stored bytes again
	header    fwpkg.Header
}

// Files under the state directory.
const (
	partFile      = "package.part"   // the package: written once its header has been checked
	firmwareFile  = "firmware.bin"   // installed non-executable firmware
	pendingFile   = "pending.json"   // what an upgrade in flight installs
	installedFile = "installed.json" // what is installed now
	stateFile     = "fwupdate.json"  // the /5 module's persisted state
	trialFile     = "trial"          // the supervisor started a program on trial
)

// previousSuffix names the previous program, kept beside the new one until
// the new one has registered.
const previousSuffix = ".previous"

// installed describes the firmware a device runs.
type installed struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	SHA256     string `json:"sha256"`
	Executable bool   `json:"executable"`
}

func (d *fileDevice) path(name string) string { return filepath.Join(d.dir, name) }
func (d *fileDevice) previous() string        { return d.exe + previousSuffix }

// crashPoint is a test hook: when LWM2M_CRASH_AT names step, the device
// dies here as if the power went (its supervisor too), so that the crash
// tests can stop it between any two steps of install and settle.
func (d *fileDevice) crashPoint(step string) {
	if d.crashAt != step {
		return
	}
	d.log.Warn("crash point reached: SIGKILL", "step", step)
	if sup := supervisorPID(); sup > 0 {
		_ = syscall.Kill(sup, syscall.SIGKILL)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

// partSink receives the verified payload: the header goes first, once.
type partSink struct{ d *fileDevice }

func (s partSink) Write(p []byte) (int, error) {
	if s.d.replaying {
		return len(p), nil
	}
	if err := s.d.storeHeaderLocked(); err != nil {
		return 0, err
	}
	return s.d.w.Write(p)
}

// storeHeaderLocked writes the checked header to package.part before the
// first payload byte, so that package.part is the package as sent.
func (d *fileDevice) storeHeaderLocked() error {
	if d.headDone {
		return nil
	}
	h, ok := d.v.Header()
	if !ok {
		return errors.New("payload before the header")
	}
	if _, err := d.w.Write(d.head[:h.Len()]); err != nil {
		return err
	}
	d.headDone, d.head = true, nil
	return nil
}

func (d *fileDevice) openLocked(name string, flag int) error {
	f, err := os.OpenFile(d.path(name), flag, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", fwupdate.ErrNoSpace, err)
	}
	d.f = f
	d.v = fwpkg.NewVerifier(partSink{d}, fwpkg.VerifyOptions{TrustedKey: d.trusted, MaxSize: d.maxPayload})
	d.head, d.headDone, d.header = nil, false, fwpkg.Header{}
	return nil
}

func (d *fileDevice) StreamOpen(_ context.Context, uri string, _ []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	if err := d.openLocked(partFile, os.O_CREATE|os.O_TRUNC|os.O_RDWR); err != nil {
		return err
	}
	w, err := writeback.From(d.f, 0)
	if err != nil {
		d.closeLocked()
		return fmt.Errorf("%w: %w", fwupdate.ErrNoSpace, err)
	}
	d.w = w
	return nil
}

// StreamResume replays the first offset stored bytes through a new
// Verifier (hashing them again, without holding them), then appends.
func (d *fileDevice) StreamResume(_ context.Context, _ string, _ []byte, offset int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	if err := d.openLocked(partFile, os.O_RDWR); err != nil {
		return err
	}
	err := d.replayLocked(offset)
	_, d.headDone = d.v.Header()
	keep := offset
	if d.headDone {
		d.head = nil
	} else {
		keep = 0 // the header is stored whole or not at all
	}
	if err == nil {
		d.w, err = writeback.From(d.f, keep)
	}
	if err != nil {
		d.closeLocked()
		return err
	}
	return nil
}

func (d *fileDevice) replayLocked(offset int64) error {
	st, err := d.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < offset {
		return fmt.Errorf("only %d of %d bytes stored", st.Size(), offset)
	}
	d.replaying = true // replayed payload bytes are stored already
	defer func() { d.replaying = false }()
	r := io.NewSectionReader(d.f, 0, offset)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := d.feedLocked(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// StreamWrite checks the package as it arrives: a header that fails (bad
// magic, checksum, signature, size) is refused before anything is stored.
func (d *fileDevice) StreamWrite(chunk []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return errors.New("no package open")
	}
	return d.feedLocked(chunk)
}

// feedLocked passes package bytes to the Verifier, keeping the header's
// bytes until it has been checked and stored.
func (d *fileDevice) feedLocked(chunk []byte) error {
	if _, ok := d.v.Header(); !ok {
		d.head = append(d.head, chunk...) // at most the header and one chunk
	}
	_, err := d.v.Write(chunk)
	if _, ok := d.v.Header(); ok && err == nil && !d.replaying {
		err = d.storeHeaderLocked() // even before any payload byte
	}
	// fwupdate maps fwpkg's verdicts and ENOSPC to the Update Result
	// they mean (docs/PACKAGE_FORMAT.md, "Checks").
	return err
}

// StreamFinish checks the payload's length and hash and makes the package
// durable.
func (d *fileDevice) StreamFinish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return errors.New("no package open")
	}
	defer d.closeLocked()
	h, err := d.v.Close()
	if err == nil {
		err = d.f.Sync()
	}
	if err != nil {
		return err
	}
	d.header = h
	d.log.Info("package verified", "name", h.Name, "version", h.Version, "bytes", h.Size, "signed", h.Signed())
	return nil
}

func (d *fileDevice) closeLocked() {
	if d.f != nil {
		d.f.Close()
		d.f, d.w = nil, nil
	}
}

// Reset drops the package; a missing one is not an error.
func (d *fileDevice) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	d.header = fwpkg.Header{}
	if err := os.Remove(d.path(partFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (d *fileDevice) PackageName() string    { return d.downloaded().Name }
func (d *fileDevice) PackageVersion() string { return d.downloaded().Version }

// downloaded returns the verified package's header, reading it back from
// the stored package after a restart.
func (d *fileDevice) downloaded() fwpkg.Header {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.header.Name == "" {
		if f, err := os.Open(d.path(partFile)); err == nil {
			d.header, _ = fwpkg.ReadHeader(f)
			f.Close()
		}
	}
	return d.header
}

// PerformUpgrade installs the payload and restarts; it returns only on
// failure, with the previous program or firmware still in place. The
// steps, each durable before the next (docs/RELIABILITY.md lists what a
// crash after each leaves):
//
//  1. pending.json says what is being installed;
//  2. the payload is copied from package.part to a temporary file beside
//     the target, hashed as it goes, and synced;
//  3. for a program, the running one is kept as PROGRAM.previous (a hard
//     link, so no copy);
//  4. the temporary file is renamed over the target;
//  5. the process ends and the supervisor starts the program on trial.
func (d *fileDevice) PerformUpgrade(ctx context.Context) error {
	h := d.downloaded()
	exec, err := d.payloadIsExecutable(h)
	if err != nil {
		return fmt.Errorf("%w: %w", fwupdate.ErrUpdateFailed, err)
	}
	next := installed{Name: h.Name, Version: h.Version, SHA256: hex.EncodeToString(h.SHA256[:]), Executable: exec}
	b, err := json.Marshal(next)
	if err == nil {
		err = atomicfile.WriteFile(d.path(pendingFile), b, 0o600)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", fwupdate.ErrUpdateFailed, err)
	}
	d.crashPoint("pending-saved")
	target := d.path(firmwareFile)
	if exec {
		target = d.exe
	}
	tmp, err := d.copyPayload(h, target)
	if err != nil {
		return err
	}
	defer tmp.Abort() // no-op once committed
	d.crashPoint("payload-copied")
	if exec {
		if err := keepPrevious(d.exe, d.previous()); err != nil {
			return fmt.Errorf("%w: keep the previous program: %w", fwupdate.ErrUpdateFailed, err)
		}
		d.crashPoint("previous-kept")
	}
	if err := tmp.Commit(); errors.Is(err, atomicfile.ErrSyncDir) {
		d.log.Warn("sync directory", "err", err)
	} else if err != nil {
		os.Remove(d.previous())
		return fmt.Errorf("%w: install %s: %w", fwupdate.ErrUpdateFailed, target, err)
	}
	d.crashPoint("installed")
	d.log.Info("firmware installed; restarting", "version", next.Version, "executable", next.Executable)
	d.restart()
	return fmt.Errorf("%w: the device did not restart", fwupdate.ErrUpdateFailed)
}

// payloadIsExecutable reads the payload's first bytes: an ELF executable
// for this machine replaces the program.
func (d *fileDevice) payloadIsExecutable(h fwpkg.Header) (bool, error) {
	f, err := os.Open(d.path(partFile))
	if err != nil {
		return false, err
	}
	defer f.Close()
	return isExecutable(io.NewSectionReader(f, int64(h.Len()), h.Size)), nil
}

// copyPayload streams the payload from package.part into the new content
// of target, checks its hash and syncs it. Commit puts it in place.
func (d *fileDevice) copyPayload(h fwpkg.Header, target string) (*atomicfile.File, error) {
	pkg, err := os.Open(d.path(partFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", fwupdate.ErrUpdateFailed, err)
	}
	defer pkg.Close()
	out, err := atomicfile.Create(target, 0o755)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", fwupdate.ErrUpdateFailed, err)
	}
	sum := sha256.New()
	half := h.Size / 2
	_, err = io.Copy(io.MultiWriter(out, sum), io.NewSectionReader(pkg, int64(h.Len()), half))
	if err == nil {
		d.crashPoint("payload-half-copied")
		_, err = io.Copy(io.MultiWriter(out, sum), io.NewSectionReader(pkg, int64(h.Len())+half, h.Size-half))
	}
	if err == nil {
		err = out.Sync()
	}
	if err == nil && [sha256.Size]byte(sum.Sum(nil)) != h.SHA256 {
		err = fmt.Errorf("%w: stored payload does not match the package hash", fwupdate.ErrIntegrity)
	} else if err != nil {
		err = fmt.Errorf("%w: %w", fwupdate.ErrUpdateFailed, err)
	}
	if err != nil {
		out.Abort()
		return nil, err
	}
	return out, nil
}

// keepPrevious makes previous a second name of the running program.
func keepPrevious(exe, previous string) error {
	if err := os.Remove(previous); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Link(exe, previous); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(previous))
}

// isExecutable reports whether r holds an ELF executable this machine can
// run.
func isExecutable(r io.ReaderAt) bool {
	f, err := elf.NewFile(r)
	if err != nil {
		return false
	}
	defer f.Close()
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM, "riscv64": elf.EM_RISCV}
	return (f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN) && f.Machine == machines[runtime.GOARCH]
}

// removeTemporaries deletes what a crash during an install or a state
// save left: our hidden temporary files, by name, in the state directory
// and beside the program.
func (d *fileDevice) removeTemporaries() {
	var patterns []string
	for _, n := range []string{stateFile, pendingFile, installedFile, firmwareFile} {
		patterns = append(patterns, filepath.Join(d.dir, atomicfile.TempPattern(n)))
	}
	patterns = append(patterns, filepath.Join(filepath.Dir(d.exe), atomicfile.TempPattern(d.exe)),
		filepath.Join(d.dir, "payload.bin")) // the second copy that earlier versions kept
	for _, p := range patterns {
		names, _ := filepath.Glob(p)
		for _, n := range names {
			if err := os.Remove(n); err == nil {
				d.log.Info("removed a temporary file left by a crash", "file", n)
			}
		}
	}
}

// settle decides, at start-up, how an upgrade in flight ended: the state
// says Updating and pending.json says what was being installed. It
// returns the firmware now running, and whether it is a new program on
// trial, to be confirmed by confirm once it has registered.
func (d *fileDevice) settle(obj *fwupdate.Object, current installed) (now installed, trial bool) {
	d.removeTemporaries()
	if st, _ := obj.State(); st != fwupdate.StateUpdating {
		// No upgrade in flight: what a crash after Success left is stale.
		d.dropPrevious()
		_ = os.Remove(d.path(pendingFile))
		return current, false
	}
	var pend installed
	b, err := os.ReadFile(d.path(pendingFile))
	if err == nil {
		err = json.Unmarshal(b, &pend)
	}
	ok := err == nil
	if ok {
		target := d.path(firmwareFile)
		if pend.Executable {
			target = d.exe
		}
		got, err := fileSHA256(target)
		ok = err == nil && got == pend.SHA256
	}
	if !ok {
		// The previous program runs: the install did not reach the
		// rename, or the supervisor rolled the new program back.
		d.log.Warn("upgrade did not take effect; the previous firmware runs", "version", current.Version)
		d.dropPrevious()
		if err := obj.SetResult(fwupdate.ResultUpdateFailed); err != nil {
			d.log.Error("report the failed upgrade", "err", err)
		}
		return current, false
	}
	if pend.Executable && supervisorPID() > 0 && fileExists(d.previous()) {
		d.log.Info("new program on trial: confirming once registered", "version", pend.Version)
		return pend, true
	}
	d.succeed(obj, pend)
	return pend, false
}

// confirm ends a trial: once the program has registered it drops the
// previous program (the commit, which the supervisor watches for) and
// reports Success.
func (d *fileDevice) confirm(ctx context.Context, c *lwm2m.Client, obj *fwupdate.Object, pend installed) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !c.Registered() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	d.crashPoint("registered")
	d.succeed(obj, pend)
}

// succeed records a new firmware that runs, in an order where a crash at
// any point leaves a true State: the previous program goes first (the
// commit), then installed.json, then Success (Idle, package dropped), and
// pending.json last, since it is what lets the next start finish the job.
func (d *fileDevice) succeed(obj *fwupdate.Object, pend installed) {
	d.dropPrevious()
	d.crashPoint("previous-dropped")
	b, err := json.Marshal(pend)
	if err == nil {
		err = atomicfile.WriteFile(d.path(installedFile), b, 0o600)
	}
	if err != nil {
		d.log.Error("record the installed firmware", "err", err)
		return // Updating still; the next start tries again
	}
	d.crashPoint("installed-saved")
	if err := obj.SetResult(fwupdate.ResultSuccess); err != nil {
		d.log.Error("report the upgrade", "err", err)
		return
	}
	d.crashPoint("success-saved")
	if err := os.Remove(d.path(pendingFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("remove pending upgrade", "err", err)
	}
	d.log.Info("upgrade succeeded", "version", pend.Version)
}

// dropPrevious removes the previous program, durably.
func (d *fileDevice) dropPrevious() {
	if err := os.Remove(d.previous()); err == nil {
		_ = atomicfile.SyncDir(filepath.Dir(d.exe))
	}
}

func fileExists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func loadInstalled(dir, dflt string) installed {
	var in installed
	b, err := os.ReadFile(filepath.Join(dir, installedFile))
	if err == nil && json.Unmarshal(b, &in) == nil && in.Version != "" {
		return in
	}
	return installed{Version: dflt}
}

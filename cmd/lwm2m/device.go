package main

import (
	"bytes"
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

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/writeback"
)

// fileDevice is the reference device's side of the Firmware Update object:
// packages stream into a file under the state directory, are verified as
// fwpkg packages, and are applied by replacing the program (when the payload
// is an executable for this platform) or the installed firmware file, then
// re-exec'ing with the same arguments and PID.
type fileDevice struct {
	dir        string
	exe        string // the running program, replaced by an executable payload
	trusted    ed25519.PublicKey
	maxPayload int64
	log        *slog.Logger
	exec       func(argv0 string, argv []string, env []string) error // syscall.Exec; tests replace it

	mu     sync.Mutex
	f      *os.File // the package as it arrives, written through w
	w      *writeback.Writer
	header fwpkg.Header
}

// Files under the state directory.
const (
	partFile      = "package.part"   // the package as it arrives
	payloadFile   = "payload.bin"    // the verified payload, ready to apply
	firmwareFile  = "firmware.bin"   // installed non-executable firmware
	pendingFile   = "pending.json"   // what an upgrade in flight installs
	installedFile = "installed.json" // what is installed now
	stateFile     = "fwupdate.json"  // the /5 module's persisted state
)

// installed describes the firmware a device runs.
type installed struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	SHA256     string `json:"sha256"`
	Executable bool   `json:"executable"`
}

func (d *fileDevice) path(name string) string { return filepath.Join(d.dir, name) }

func (d *fileDevice) StreamOpen(_ context.Context, uri string, _ []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	f, err := os.OpenFile(d.path(partFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", fwupdate.ErrNoSpace, err)
	}
	w, err := writeback.From(f, 0)
	if err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", fwupdate.ErrNoSpace, err)
	}
	d.f, d.w = f, w
	return nil
}

func (d *fileDevice) StreamResume(_ context.Context, _ string, _ []byte, offset int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	f, err := os.OpenFile(d.path(partFile), os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err == nil && st.Size() < offset {
		err = fmt.Errorf("only %d of %d bytes stored", st.Size(), offset)
	}
	var w *writeback.Writer
	if err == nil {
		w, err = writeback.From(f, offset)
	}
	if err != nil {
		f.Close()
		return err
	}
	d.f, d.w = f, w
	return nil
}

func (d *fileDevice) StreamWrite(chunk []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return errors.New("no package open")
	}
	if _, err := d.w.Write(chunk); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return fmt.Errorf("%w: %w", fwupdate.ErrNoSpace, err)
		}
		return err
	}
	return nil
}

// StreamFinish verifies the stored package and extracts its payload.
func (d *fileDevice) StreamFinish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return errors.New("no package open")
	}
	if err := d.f.Sync(); err != nil {
		return err
	}
	d.closeLocked()
	pkg, err := os.Open(d.path(partFile))
	if err != nil {
		return err
	}
	defer pkg.Close()
	out, err := os.OpenFile(d.path(payloadFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", fwupdate.ErrNoSpace, err)
	}
	v := fwpkg.NewVerifier(out, fwpkg.VerifyOptions{TrustedKey: d.trusted, MaxSize: d.maxPayload})
	_, err = io.Copy(v, pkg)
	h, cerr := v.Close()
	if err == nil {
		err = cerr
	}
	if err == nil {
		err = out.Sync()
	}
	out.Close()
	switch {
	case err == nil:
		d.header = h
		d.log.Info("package verified", "name", h.Name, "version", h.Version, "bytes", h.Size, "signed", h.Signed())
		return nil
	case errors.Is(err, fwpkg.ErrNotPackage):
		return fmt.Errorf("%w: %w", fwupdate.ErrUnsupportedPackage, err)
	case errors.Is(err, fwpkg.ErrIntegrity):
		return fmt.Errorf("%w: %w", fwupdate.ErrIntegrity, err)
	case errors.Is(err, fwpkg.ErrTooLarge):
		return fmt.Errorf("%w: %w", fwupdate.ErrNoSpace, err)
	}
	return err
}

func (d *fileDevice) closeLocked() {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}

func (d *fileDevice) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeLocked()
	d.header = fwpkg.Header{}
	for _, n := range []string{partFile, payloadFile} {
		if err := os.Remove(d.path(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
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

// PerformUpgrade installs the payload atomically and re-execs. It returns
// only on failure.
func (d *fileDevice) PerformUpgrade(ctx context.Context) error {
	h := d.downloaded()
	payload, err := os.ReadFile(d.path(payloadFile))
	if err != nil {
		return fmt.Errorf("%w: %w", fwupdate.ErrUpdateFailed, err)
	}
	sum := sha256.Sum256(payload)
	if sum != h.SHA256 {
		return fmt.Errorf("%w: stored payload does not match the package hash", fwupdate.ErrIntegrity)
	}
	next := installed{Name: h.Name, Version: h.Version, SHA256: hex.EncodeToString(sum[:]), Executable: isExecutable(payload)}
	b, _ := json.Marshal(next)
	if err := fwupdate.WriteFileAtomic(d.path(pendingFile), b, 0o600); err != nil {
		return fmt.Errorf("%w: %w", fwupdate.ErrUpdateFailed, err)
	}
	target := d.path(firmwareFile)
	if next.Executable {
		target = d.exe
	}
	if err := fwupdate.WriteFileAtomic(target, payload, 0o755); err != nil {
		return fmt.Errorf("%w: install %s: %w", fwupdate.ErrUpdateFailed, target, err)
	}
	d.log.Info("firmware installed; restarting", "version", next.Version, "executable", next.Executable)
	err = d.exec(d.exe, os.Args, os.Environ())
	return fmt.Errorf("%w: re-exec: %w", fwupdate.ErrUpdateFailed, err)
}

// isExecutable reports whether payload is an ELF executable this machine
// can run.
func isExecutable(payload []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(payload))
	if err != nil {
		return false
	}
	defer f.Close()
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "arm": elf.EM_ARM, "riscv64": elf.EM_RISCV}
	return (f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN) && f.Machine == machines[runtime.GOARCH]
}

// settle decides, at start-up, how an upgrade that was in flight ended:
// the state says Updating and pending.json says what was being installed.
// It returns the firmware now installed.
func (d *fileDevice) settle(obj *fwupdate.Object, current installed) installed {
	st, _ := obj.State()
	if st != fwupdate.StateUpdating {
		return current
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
		d.log.Warn("upgrade did not take effect")
		_ = obj.SetResult(fwupdate.ResultUpdateFailed)
		return current
	}
	if b, err := json.Marshal(pend); err == nil {
		_ = fwupdate.WriteFileAtomic(d.path(installedFile), b, 0o600)
	}
	os.Remove(d.path(pendingFile))
	_ = d.Reset()
	d.log.Info("upgrade succeeded", "version", pend.Version)
	_ = obj.SetResult(fwupdate.ResultSuccess)
	return pend
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

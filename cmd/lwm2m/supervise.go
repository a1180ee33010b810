package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/atomicfile"
)

// The supervisor is the trial boot of `lwm2m client` (docs/FIRMWARE_UPDATE.md,
// "Trial boot and rollback"), in the manner of MCUboot's test-and-confirm.
// It runs the device program as its child and outlives it. A new program
// is on trial while PROGRAM.previous exists: the program removes that file
// once it has registered (the confirmation). If the new program cannot
// start, ends, or does not confirm within the confirm timeout, the
// supervisor renames PROGRAM.previous back over PROGRAM and starts it; that
// program then reports Update failed (8). The supervisor has no LwM2M code,
// so that it never needs updating itself.

const (
	supervisorEnv = "LWM2M_SUPERVISOR" // in the program's environment: the supervisor's PID
	exitRestart   = 75                 // the program asks to be started again
)

// supervisorPID is the PID of the supervisor running this program, or 0.
func supervisorPID() int {
	pid, _ := strconv.Atoi(os.Getenv(supervisorEnv))
	return pid
}

type supervisor struct {
	exe            string   // the program, replaced by updates
	args           []string // its arguments
	stateDir       string   // holds the trial marker
	confirmTimeout time.Duration
	stdout, stderr io.Writer
	log            *slog.Logger
}

func (s *supervisor) previous() string { return s.exe + previousSuffix }
func (s *supervisor) marker() string   { return filepath.Join(s.stateDir, trialFile) }

// run starts the program until it ends for good, and returns its exit code.
func (s *supervisor) run(ctx context.Context) int {
	runtime.LockOSThread() // the child's death signal follows the thread that forked it
	for {
		code, again := s.runOnce(ctx, s.boot())
		if !again || ctx.Err() != nil {
			return code
		}
	}
}

// boot says whether the program is on trial. A trial that was already
// started (the marker) and neither confirmed nor rolled back ended with
// the whole device: that program is not accepted either.
func (s *supervisor) boot() (trial bool) {
	if !fileExists(s.previous()) {
		_ = os.Remove(s.marker())
		return false
	}
	if fileExists(s.marker()) {
		s.rollback("the device stopped while the new program was on trial")
		return false
	}
	if err := os.WriteFile(s.marker(), nil, 0o600); err != nil {
		s.log.Warn("supervisor: cannot mark the trial", "err", err)
	}
	_ = atomicfile.SyncDir(s.stateDir)
	return true
}

// rollback puts the previous program back, atomically.
func (s *supervisor) rollback(why string) {
	err := os.Rename(s.previous(), s.exe)
	if err == nil {
		err = atomicfile.SyncDir(filepath.Dir(s.exe))
	}
	_ = os.Remove(s.marker())
	if err != nil {
		s.log.Error("supervisor: cannot restore the previous program", "why", why, "err", err)
		return
	}
	s.log.Warn("supervisor: new program rejected; the previous one is back", "why", why)
}

// runOnce runs the program once. again asks for another start: after a
// rollback, or when the program asked for it (a new program, a reboot).
func (s *supervisor) runOnce(ctx context.Context, trial bool) (code int, again bool) {
	cmd := exec.Command(s.exe, s.args...)
	cmd.Env = append(os.Environ(), supervisorEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		if trial {
			s.rollback(fmt.Sprintf("cannot start the new program: %v", err))
			return 1, true
		}
		s.log.Error("supervisor: cannot start the program", "err", err)
		return 1, false
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var deadline, poll <-chan time.Time
	if trial {
		timer := time.NewTimer(s.confirmTimeout)
		defer timer.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		deadline, poll = timer.C, tick.C
	}
	for {
		select {
		case <-poll:
			if !fileExists(s.previous()) {
				_ = os.Remove(s.marker())
				deadline, poll, trial = nil, nil, false
				s.log.Info("supervisor: new program confirmed")
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			<-done
			if fileExists(s.previous()) {
				s.rollback(fmt.Sprintf("no registration within -confirm-timeout %v", s.confirmTimeout))
			}
			return 1, true
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM) // it de-registers and ends
			return exitCode(<-done), false
		case err := <-done:
			if trial && fileExists(s.previous()) {
				s.rollback(fmt.Sprintf("the new program ended before it registered (%v)", err))
				return 1, true
			}
			code := exitCode(err)
			return code, code == exitRestart
		}
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode()
	}
	return 1
}

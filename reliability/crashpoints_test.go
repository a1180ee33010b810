package reliability_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// The steps of install and settle at which the device can be made to die
// (LWM2M_CRASH_AT, cmd/lwm2m/device.go), in the order they run, with the
// outcome a restart must report: true is Idle/Success with the new
// firmware, false is Downloaded/Update failed with the old one and the
// package intact. docs/RELIABILITY.md has the same table.
var crashSteps = []struct {
	step       string
	executable bool // only on the program's path
	success    bool
}{
	{"pending-saved", false, false},
	{"payload-half-copied", false, false},
	{"payload-copied", false, false},
	{"previous-kept", true, false},
	{"installed", false, true},
	{"registered", true, false}, // a trial cut short by a power loss is rolled back
	{"previous-dropped", false, true},
	{"installed-saved", false, true},
	{"success-saved", false, true},
}

// SIGKILL the device (supervisor and program, as a power loss) at every
// step of install and settle, for a firmware file and for a new program:
// after the restart the device reports the true State and Result, holds
// what it says it holds, has no temporary files left, and takes a further
// update.
func TestCrashPoints(t *testing.T) {
	t.Parallel() // waits on timers and processes more than on the CPU
	if testing.Short() {
		t.Skip("builds and runs the device program")
	}
	r := newCrashRig(t)
	t.Cleanup(r.stop)
	bin, err := os.ReadFile(r.bin)
	if err != nil {
		t.Fatal(err)
	}
	// New programs differ from the old by a trailer, which ELF ignores.
	progV2 := append(bytes.Clone(bin), "\nv2"...)
	progV3 := append(bytes.Clone(bin), "\nv3"...)
	fwV3 := image(64<<10, 3)
	pkgs := map[string][]byte{}
	for name, payload := range map[string][]byte{"fw2": r.payload, "fw3": fwV3, "prog2": progV2, "prog3": progV3} {
		var b bytes.Buffer
		if _, err := fwpkg.Pack(&b, bytes.NewReader(payload), int64(len(payload)), "fw", name[len(name)-1:]+".0", nil); err != nil {
			t.Fatal(err)
		}
		pkgs[name] = b.Bytes()
		if err := os.WriteFile(filepath.Join(t.TempDir(), name), b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, httpAddr := serveHTTP(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(pkgs[strings.TrimPrefix(req.URL.Path, "/")]))
	}))
	var summary []string
	for _, prog := range []bool{false, true} {
		for _, cs := range crashSteps {
			if cs.executable && !prog {
				continue
			}
			kind := "firmware"
			if prog {
				kind = "program"
			}
			t0 := time.Now()
			r.fresh(kind + "-" + cs.step)
			r.exe = filepath.Join(r.t.TempDir(), "lwm2m")
			if err := os.WriteFile(r.exe, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			v2, v3 := "fw2", "fw3"
			if prog {
				v2, v3 = "prog2", "prog3"
			}
			r.env = []string{"LWM2M_CRASH_AT=" + cs.step}
			r.start()
			r.pkgSum = sha256.Sum256(pkgs[v2])
			r.writeURI("http://" + httpAddr + "/" + v2)
			if s, res := r.settle(20 * time.Second); s != fwupdate.StateDownloaded {
				t.Fatalf("%s: download ended %v/%v", r.ep, s, res)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := r.srv.Execute(ctx, r.ep, model.NewPath(5, 0, 2), "")
			cancel()
			if err != nil {
				t.Fatalf("%s: execute Update: %v", r.ep, err)
			}
			r.waitDead(cs.step)
			r.env = nil
			r.start()
			s, res := r.settle(30 * time.Second)
			want := fmt.Sprintf("%v/%v", fwupdate.StateDownloaded, fwupdate.ResultUpdateFailed)
			if cs.success {
				want = fmt.Sprintf("%v/%v", fwupdate.StateIdle, fwupdate.ResultSuccess)
			}
			if got := fmt.Sprintf("%v/%v", s, res); got != want {
				t.Errorf("%s: killed at %s: %s after restart, want %s; log:\n%s", kind, cs.step, got, want, r.log)
			}
			r.checkInstalled(prog, cs.success, bin, progV2)
			r.checkNoTemporaries()
			t1 := time.Now()

			// The device takes a further update.
			ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
			file := filepath.Join(r.t.TempDir(), v3)
			if err := os.WriteFile(file, pkgs[v3], 0o600); err != nil {
				t.Fatal(err)
			}
			ures, err := r.srv.Update(ctx, r.ep, file, server.PullHTTP, nil)
			cancel()
			if err != nil || ures != fwupdate.ResultSuccess {
				t.Errorf("%s: killed at %s: the next update ended %v (%v); log:\n%s", kind, cs.step, ures, err, r.log)
			}
			r.checkInstalled(prog, true, bin, progV3)
			if !prog {
				if fw, _ := os.ReadFile(filepath.Join(r.dir, "firmware.bin")); !bytes.Equal(fw, fwV3) {
					t.Errorf("%s: firmware.bin is not v3 after the further update", r.ep)
				}
			}
			r.stop()
			summary = append(summary, fmt.Sprintf("%s@%s→%v/%d (%v, further update %v)", kind, cs.step, s, res,
				t1.Sub(t0).Round(10*time.Millisecond), time.Since(t1).Round(10*time.Millisecond)))
		}
	}
	t.Logf("%d crash points: %s", len(summary), strings.Join(summary, "; "))
}

// waitDead waits for the device to kill itself at its crash point.
func (r *crashRig) waitDead(step string) {
	r.t.Helper()
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		r.t.Fatalf("%s: the device never reached crash point %s; log:\n%s", r.ep, step, r.log)
	}
	if !strings.Contains(r.log.String(), "crash point reached") {
		r.t.Fatalf("%s: the device died, but not at %s; log:\n%s", r.ep, step, r.log)
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL) // the program, if it outlived its supervisor
	if reg, ok := r.srv.Registration(r.ep); ok {
		r.lastAddr = reg.Addr // a program on trial registered before it died
	}
}

// checkInstalled asserts which program runs and that a failed one left the
// old program whole.
func (r *crashRig) checkInstalled(prog, success bool, old, new []byte) {
	r.t.Helper()
	got, err := os.ReadFile(r.exe)
	if err != nil {
		r.t.Fatal(err)
	}
	want, what := old, "the old program"
	if prog && success {
		want, what = new, "the new program"
	}
	if !bytes.Equal(got, want) {
		r.t.Errorf("%s: the program file (%d bytes) is not %s", r.ep, len(got), what)
	}
	if _, err := os.Lstat(r.exe + ".previous"); err == nil {
		r.t.Errorf("%s: %s.previous left behind", r.ep, r.exe)
	}
}

// checkNoTemporaries asserts that nothing a crash left is still there.
func (r *crashRig) checkNoTemporaries() {
	r.t.Helper()
	for _, pattern := range []string{filepath.Join(r.dir, ".*.tmp*"), filepath.Join(filepath.Dir(r.exe), ".*.tmp*")} {
		if left, _ := filepath.Glob(pattern); len(left) > 0 {
			r.t.Errorf("%s: temporary files left: %v", r.ep, left)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// TestMain lets the test binary act as the lwm2m program, so a device
// process can be this very binary and be replaced by a copy of it. A copy
// with a trialTrailer behaves as a broken new program would.
func TestMain(m *testing.M) {
	if os.Getenv("LWM2M_TEST_AS_PROGRAM") == "1" {
		switch trialMode() {
		case "exit":
			os.Exit(3)
		case "hang":
			time.Sleep(time.Hour) // not select{}: the runtime would call that a deadlock and exit
		case "crash":
			time.Sleep(time.Second)
			panic("trial program crashes after 1 s")
		}
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// Servers and commands, in this process and in children, share one
	// API token file, never the user's own; the built program lives
	// beside it.
	dir, err := os.MkdirTemp("", "lwm2m-test-token-")
	if err != nil {
		panic(err)
	}
	os.Setenv(srvTokenEnv, filepath.Join(dir, "api-token"))
	testDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const trialTrailer = "\nLWM2M-TEST-MODE="

// trialMode reads the mode a test appended to this program's file.
func trialMode() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	f, err := os.Open(exe)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() < 64 {
		return ""
	}
	tail := make([]byte, 64)
	if _, err := f.ReadAt(tail, st.Size()-64); err != nil {
		return ""
	}
	_, mode, ok := strings.Cut(string(tail), trialTrailer)
	if !ok {
		return ""
	}
	return strings.TrimSpace(mode)
}

// deviceRig runs a copy of the test binary as `lwm2m client`, under its
// supervisor, against an in-process server.
type deviceRig struct {
	t    *testing.T
	dir  string
	exe  string   // the device program
	sup  string   // the program the supervisor runs from: exe, or a copy of its own
	args []string // the supervisor's
	srv  *server.Server
	cmd  *exec.Cmd
	logs *syncbuf.Buffer
	ctx  context.Context
}

func newDeviceRig(t *testing.T, ep string, extra ...string) *deviceRig {
	t.Helper()
	return newDeviceRigSup(t, ep, false, extra...)
}

// newDeviceRigSup is newDeviceRig; with ownSupervisor, the supervisor runs
// from a copy of its own, dir/supervisor/lwm2m, with -program naming the
// device program, as docs/FIRMWARE_UPDATE.md advises.
func newDeviceRigSup(t *testing.T, ep string, ownSupervisor bool, extra ...string) *deviceRig {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &deviceRig{t: t, dir: dir, exe: filepath.Join(dir, "device", "lwm2m"), logs: &syncbuf.Buffer{}}
	if err := copyFile(self, r.exe, 0o755); err != nil {
		t.Fatal(err)
	}
	r.sup = r.exe
	if ownSupervisor {
		r.sup = filepath.Join(dir, "supervisor", "lwm2m")
		if err := copyFile(self, r.sup, 0o755); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, "-program", r.exe)
	}
	var slog io.Writer = io.Discard
	if os.Getenv("TRIAL_DEBUG") != "" {
		slog = r.logs
	}
	r.srv = &server.Server{Addr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", PublicHost: "127.0.0.1",
		Logger: slogNew(slog), RequestTimeout: 2 * time.Second} // a poll of a dead program must not hold the update up for 30 s
	if err := r.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	r.ctx = ctx
	sctx, stop := context.WithCancel(context.Background())
	go r.srv.Serve(sctx)
	r.args = append([]string{"client", "-endpoint", ep, "-server", "coap://" + r.srv.LocalAddr().String(),
		"-state-dir", filepath.Join(dir, "state"), "-firmware-version", "1.0"}, extra...)
	r.start()
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
		stop()
		r.srv.Close()
		cancel()
	})
	for {
		if _, ok := r.srv.Registration(ep); ok {
			return r
		}
		if ctx.Err() != nil {
			t.Fatalf("device did not register\n%s", r.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start starts the supervisor, as a device's boot does.
func (r *deviceRig) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.sup, r.args...)
	r.cmd.Env = append(os.Environ(), "LWM2M_TEST_AS_PROGRAM=1")
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
}

// pack writes payload as a package of the given version and returns it.
func (r *deviceRig) pack(payload []byte, version string) string {
	r.t.Helper()
	in := filepath.Join(r.t.TempDir(), "payload")
	if err := os.WriteFile(in, payload, 0o755); err != nil {
		r.t.Fatal(err)
	}
	out := in + ".pkg"
	if err := packFile(in, out, "lwm2m", version, nil); err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *deviceRig) firmwareVersion(ep string) string {
	r.t.Helper()
	c, err := r.srv.Read(r.ctx, ep, model.NewPath(3, 0, 3), content.TextPlain)
	if err != nil {
		r.t.Fatalf("read /3/0/3: %v\n%s", err, r.logs)
	}
	return string(c.Payload)
}

// An upgrade restarts the program under the same supervisor: new firmware
// version, Update Result 1.
func TestUpgradeRestartsUnderSupervisor(t *testing.T) {
	r := newDeviceRig(t, "reexec")
	// A non-executable payload: installed as firmware.bin, then the
	// program (this test binary) is started again.
	pkg := r.pack([]byte("firmware image v2"), "2.0")
	res, err := r.srv.Update(r.ctx, "reexec", pkg, server.Push, nil)
	if err != nil || res != fwupdate.ResultSuccess {
		t.Fatalf("update: %v (%v)\n%s", res, err, r.logs)
	}
	if v := r.firmwareVersion("reexec"); v != "2.0" {
		t.Fatalf("/3/0/3 = %q, want 2.0", v)
	}
	// Both starts are children of the process the test started.
	starts := regexp.MustCompile(`msg="device starting".* firmware=(\S+) pid=(\d+) supervisor=(\d+)`).FindAllStringSubmatch(r.logs.String(), -1)
	sup := strconv.Itoa(r.cmd.Process.Pid)
	if len(starts) != 2 || starts[0][1] != "1.0" || starts[1][1] != "2.0" || starts[0][3] != sup || starts[1][3] != sup || starts[0][2] == starts[1][2] {
		t.Fatalf("device starts %q, want 1.0 then 2.0, two programs under supervisor %s\n%s", starts, sup, r.logs.String())
	}
	if got, _ := os.ReadFile(filepath.Join(r.dir, "state", firmwareFile)); string(got) != "firmware image v2" {
		t.Errorf("installed firmware %q", got)
	}
}

// After a restart whose installed firmware is not what was meant, the
// device reports Downloaded with Update Result 8.
func TestSettleFailedUpgrade(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, firmwareFile), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("new"))
	b, _ := json.Marshal(installed{Version: "2.0", SHA256: hex.EncodeToString(want[:])})
	if err := os.WriteFile(filepath.Join(dir, pendingFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "settle", Server: "coap://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dev := &fileDevice{dir: dir, exe: filepath.Join(dir, "none"), log: log}
	obj, err := fwupdate.Install(c, dev, fwupdate.Config{Initial: &fwupdate.Persisted{State: fwupdate.StateUpdating}})
	if err != nil {
		t.Fatal(err)
	}
	now, _ := dev.settle(obj, installed{Version: "1.0"})
	if st, res := obj.State(); st != fwupdate.StateDownloaded || res != fwupdate.ResultUpdateFailed {
		t.Fatalf("after a failed upgrade: %v/%v, want Downloaded/Update failed", st, res)
	}
	if now.Version != "1.0" {
		t.Errorf("reports firmware %q, want the old 1.0", now.Version)
	}
}

// noInterpreter returns a copy of /bin/true whose ELF interpreter does not
// exist: exec fails with "no such file", as with a program built for
// another system.
func noInterpreter(t *testing.T) []byte {
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skip("no /bin/true")
	}
	for _, interp := range []string{"/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"} {
		if i := bytes.Index(b, []byte(interp)); i >= 0 {
			copy(b[i+len(interp)-1:], "X")
			return b
		}
	}
	t.Skip("/bin/true has no known interpreter")
	return nil
}

// selfImage returns the bytes of this test binary, the device program.
func selfImage(t *testing.T) []byte {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	image, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	return image
}

// trialProgram is image with a trialTrailer: a program that behaves as
// mode says (TestMain).
func trialProgram(image []byte, mode string) []byte {
	return append(append(slices.Clip(image), trialTrailer...), mode+"\n"...)
}

// A new program that cannot start, ends at once, hangs without
// registering, or crashes after 1 s is rolled back by the supervisor: the
// previous program runs again, intact, and reports Update failed (8). A
// good one is confirmed once it has registered and reports Success; the
// device takes a further update after a rollback.
func TestTrialBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the device program")
	}
	image := selfImage(t)
	withMode := func(mode string) []byte { return trialProgram(image, mode) }
	for _, tc := range []struct {
		name    string
		payload []byte
		why     string // the supervisor's reason
	}{
		{"cannot exec", noInterpreter(t), "cannot start the new program"},
		{"exits at once", withMode("exit"), "ended before it registered"},
		{"hangs", withMode("hang"), "no registration within -confirm-timeout"},
		{"crashes after 1s", withMode("crash"), "ended before it registered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := "trial-" + strings.ReplaceAll(tc.name, " ", "-")
			r := newDeviceRig(t, ep, "-confirm-timeout", "3s")
			before := sha256.Sum256(image)
			res, err := r.srv.Update(r.ctx, ep, r.pack(tc.payload, "2.0"), server.PullHTTP, nil)
			if res != fwupdate.ResultUpdateFailed {
				t.Fatalf("update: %v (%v), want Update failed\n%s", res, err, r.logs)
			}
			if v := r.firmwareVersion(ep); v != "1.0" {
				t.Errorf("/3/0/3 = %q after the rollback, want 1.0", v)
			}
			if b, err := os.ReadFile(r.exe); err != nil || sha256.Sum256(b) != before {
				t.Errorf("the program file is not the previous program (%d bytes, %v)", len(b), err)
			}
			for _, left := range []string{r.exe + previousSuffix, filepath.Join(r.dir, "state", trialFile)} {
				if _, err := os.Lstat(left); err == nil {
					t.Errorf("%s left behind", left)
				}
			}
			if !strings.Contains(r.logs.String(), "new program rejected") || !strings.Contains(r.logs.String(), tc.why) {
				t.Errorf("the supervisor did not say %q\n%s", tc.why, r.logs)
			}
			if os.Getenv("TRIAL_DEBUG") != "" {
				t.Logf("%s", r.logs)
			}
			if tc.name != "exits at once" {
				return
			}
			// The device is whole: a good program is accepted.
			res, err = r.srv.Update(r.ctx, ep, r.pack(withMode("good"), "3.0"), server.PullHTTP, nil)
			if err != nil || res != fwupdate.ResultSuccess {
				t.Fatalf("good update after a rollback: %v (%v)\n%s", res, err, r.logs)
			}
			if v := r.firmwareVersion(ep); v != "3.0" {
				t.Errorf("/3/0/3 = %q, want 3.0", v)
			}
			if b, _ := os.ReadFile(r.exe); !bytes.Equal(b, withMode("good")) {
				t.Error("the program file is not the new program")
			}
			if _, err := os.Lstat(r.exe + previousSuffix); err == nil {
				t.Error("the previous program is still kept after the confirmation")
			}
		})
	}
}

func slogNew(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// Under -trusted-key, an unsigned push is refused at its first block:
// Result 5 at once, nothing stored, not the whole image uploaded first.
func TestUnsignedPushRefusedAtOnce(t *testing.T) {
	pub, _, err := fwpkg.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := fwpkg.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "trusted.pub")
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	r := newDeviceRig(t, "unsigned", "-trusted-key", keyFile)
	const size = 4 << 20
	pkg := r.pack(bytes.Repeat([]byte{0x5a}, size), "2.0")
	var sent int64
	err = r.srv.Push(r.ctx, "unsigned", pkg, func(s, _ int64) { sent = s })
	if err == nil {
		t.Fatal("the push was accepted")
	}
	if sent > 64<<10 {
		t.Errorf("%d bytes pushed before the refusal", sent)
	}
	for _, res := range []struct {
		id   uint16
		want string
	}{{3, "0"}, {5, "5"}} {
		c, err := r.srv.Read(r.ctx, "unsigned", model.NewPath(5, 0, res.id), content.TextPlain)
		if err != nil || string(c.Payload) != res.want {
			t.Errorf("/5/0/%d = %q (%v), want %s", res.id, c.Payload, err, res.want)
		}
	}
	if st, err := os.Stat(filepath.Join(r.dir, "state", partFile)); err == nil && st.Size() > 0 {
		t.Errorf("%d bytes stored", st.Size())
	}
}

// A trial that the device's power cut short is rolled back at the next
// boot, even when the new program hangs before it could run a supervisor
// of its own: the supervisor runs from a copy that updates never replace
// (-program names the device program).
func TestTrialCutShortRolledBack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the device program")
	}
	image := selfImage(t)
	const ep = "trial-cut"
	r := newDeviceRigSup(t, ep, true, "-confirm-timeout", "60s")
	hang := trialProgram(image, "hang")
	uctx, ucancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = r.srv.Update(uctx, ep, r.pack(hang, "2.0"), server.PullHTTP, nil)
	}()
	marker := filepath.Join(r.dir, "state", trialFile)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if r.ctx.Err() != nil {
			t.Fatalf("the new program never went on trial\n%s", r.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The power goes: the supervisor dies, and its child with it.
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = r.cmd.Wait()
	ucancel()
	<-done
	r.start() // the next boot
	for {
		// Short reads: until it registers again, the device's address is
		// the dead program's.
		rctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
		c, err := r.srv.Read(rctx, ep, model.NewPath(5, 0, 5), content.TextPlain)
		cancel()
		if err == nil && string(c.Payload) == "8" {
			break
		}
		if r.ctx.Err() != nil {
			t.Fatalf("no Update failed after the next boot (last read %q, %v)\n%s", c.Payload, err, r.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := r.firmwareVersion(ep); v != "1.0" {
		t.Errorf("/3/0/3 = %q after the rollback, want 1.0", v)
	}
	if b, err := os.ReadFile(r.exe); err != nil || sha256.Sum256(b) != sha256.Sum256(image) {
		t.Errorf("the program file is not the previous program (%d bytes, %v)", len(b), err)
	}
	if !strings.Contains(r.logs.String(), "the device stopped while the new program was on trial") {
		t.Errorf("the supervisor did not say why it rolled back\n%s", r.logs)
	}
}

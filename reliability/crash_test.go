package reliability_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// binDir holds the device program for the test binary run; TestMain
// removes it.
var binDir string

// TestMain removes the program buildDevice built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildDevice builds the reference device program once per test binary run.
var buildDevice = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "reliability-bin")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "lwm2m")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/lwm2m-fota/lwm2m/cmd/lwm2m").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// slowWriter sends a response body in 4 KiB pieces, 2 ms apart.
type slowWriter struct{ http.ResponseWriter }

func (w slowWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), 4096)
		m, err := w.ResponseWriter.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		_ = http.NewResponseController(w.ResponseWriter).Flush()
		time.Sleep(2 * time.Millisecond)
		b = b[k:]
	}
	return n, nil
}

// crashRig runs the real `lwm2m client` against an in-process server.
type crashRig struct {
	t        *testing.T
	bin      string
	srv      *server.Server
	pkgFile  string
	pkgSum   [32]byte
	payload  []byte
	im       server.Image
	dir, ep  string
	exe      string   // the program this scenario runs (a copy when updates replace it)
	env      []string // extra environment of the next start
	cmd      *exec.Cmd
	log      *syncbuf.Buffer
	lastAddr string
}

func newCrashRig(t *testing.T) *crashRig {
	t.Helper()
	bin, err := buildDevice()
	if err != nil {
		t.Fatal(err)
	}
	payload := image(512<<10, 77) // random bytes: installed as firmware.bin, not exec'd
	var pkg bytes.Buffer
	if _, err := fwpkg.Pack(&pkg, bytes.NewReader(payload), int64(len(payload)), "fw", "2.0", nil); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "fw.pkg")
	if err := os.WriteFile(file, pkg.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := &server.Server{Addr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: lwm2mtest.Logger(t), RequestTimeout: 3 * time.Second}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	im, err := srv.Publish(file)
	if err != nil {
		t.Fatal(err)
	}
	return &crashRig{t: t, bin: bin, srv: srv, pkgFile: file, pkgSum: sha256.Sum256(pkg.Bytes()), payload: payload, im: im}
}

// fresh gives the next scenario a new device: state directory and endpoint.
func (r *crashRig) fresh(name string) {
	r.dir = r.t.TempDir()
	r.ep = "crash-" + name
	r.exe, r.env = r.bin, nil
	r.lastAddr = ""
	r.log = &syncbuf.Buffer{}
}

// start runs the device and waits for its (new) registration.
func (r *crashRig) start() {
	r.t.Helper()
	cmd := exec.Command(r.exe, "client", "-endpoint", r.ep, "-server", "coap://"+r.srv.LocalAddr().String(),
		"-state-dir", r.dir, "-lifetime", "60", "-retries", "5", "-max-package-size", "67108864", "-confirm-timeout", "10s")
	cmd.Env = append(os.Environ(), r.env...)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	// Its own process group, so that kill takes the supervisor and the
	// program at once, as a power loss would.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd = cmd
	waitfor.Until(r.t, 15*time.Second, func() error {
		if reg, ok := r.srv.Registration(r.ep); ok && reg.Addr != r.lastAddr {
			r.lastAddr = reg.Addr
			return nil
		}
		return fmt.Errorf("%s did not register; log:\n%s", r.ep, r.log)
	})
}

// kill sends SIGKILL: no deferred code, no final save.
func (r *crashRig) kill() {
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
}

func (r *crashRig) stop() {
	if r.cmd != nil && r.cmd.ProcessState == nil {
		r.kill()
	}
}

func (r *crashRig) readInt(path model.Path) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := r.srv.Read(ctx, r.ep, path, content.TextPlain)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(c.Payload)))
}

// stateResult reads /5/0/3 and /5/0/5 from the server side.
func (r *crashRig) stateResult() (fwupdate.State, fwupdate.Result) {
	r.t.Helper()
	for try := 0; ; try++ {
		// Two reads are not one snapshot: State is read again, and a
		// pair that straddles a transition is read anew.
		s, err1 := r.readInt(model.NewPath(5, 0, 3))
		res, err2 := r.readInt(model.NewPath(5, 0, 5))
		s2, err3 := r.readInt(model.NewPath(5, 0, 3))
		if err1 == nil && err2 == nil && err3 == nil && s == s2 {
			return fwupdate.State(s), fwupdate.Result(res)
		}
		if err1 == nil && err2 == nil && err3 == nil {
			continue
		}
		if try == 5 {
			r.t.Fatalf("read state: %v %v; log:\n%s", err1, err2, r.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkDownloaded asserts that a device reporting Downloaded holds exactly
// the source package.
func (r *crashRig) checkDownloaded(when string) {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, "package.part"))
	if err != nil || sha256.Sum256(b) != r.pkgSum {
		r.t.Fatalf("%s: Downloaded reported, but the stored package (%d bytes, %v) differs from the source", when, len(b), err)
	}
}

// consistent lists the (State, Result) pairs a device may report.
func consistent(s fwupdate.State, res fwupdate.Result) bool {
	switch s {
	case fwupdate.StateIdle:
		return res >= fwupdate.ResultInitial && res <= fwupdate.ResultCancelled
	case fwupdate.StateDownloading, fwupdate.StateUpdating:
		return res == fwupdate.ResultInitial
	case fwupdate.StateDownloaded:
		return res == fwupdate.ResultInitial || res == fwupdate.ResultUpdateFailed || res == fwupdate.ResultDeferred
	}
	return false
}

// settle waits until the device leaves Downloading and Updating, checking
// every state it reports on the way.
func (r *crashRig) settle(timeout time.Duration) (fwupdate.State, fwupdate.Result) {
	r.t.Helper()
	var s fwupdate.State
	var res fwupdate.Result
	waitfor.Until(r.t, timeout, func() error {
		s, res = r.stateResult()
		if !consistent(s, res) {
			r.t.Fatalf("inconsistent State %v with Result %v; log:\n%s", s, res, r.log)
		}
		if s == fwupdate.StateDownloaded {
			r.checkDownloaded("settle")
		}
		if s == fwupdate.StateIdle || s == fwupdate.StateDownloaded {
			return nil
		}
		return fmt.Errorf("stuck in %v; log:\n%s", s, r.log)
	})
	return s, res
}

// partSize is how many package bytes the device has stored.
func (r *crashRig) partSize() int64 {
	st, err := os.Stat(filepath.Join(r.dir, "package.part"))
	if err != nil {
		return 0
	}
	return st.Size()
}

func (r *crashRig) writeURI(uri string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Write(ctx, r.ep, model.NewPath(5, 0, 1), content.TextPlain, []byte(uri), true); err != nil {
		r.t.Fatalf("write Package URI: %v", err)
	}
}

// SIGKILL the real device at 22 seeded moments and restart it with the same
// state directory: State and Result stay consistent, a pull resumes or
// restarts and ends byte-exact, and Downloaded always means the source's
// bytes.
func TestCrashAnywhere(t *testing.T) {
	t.Parallel() // waits on timers and processes more than on the CPU
	if testing.Short() {
		t.Skip("builds and runs the device program")
	}
	r := newCrashRig(t)
	t.Cleanup(r.stop)
	rng := rand.New(rand.NewPCG(2024, 6))
	pkgSize := r.im.Size
	coapURI := "coap://" + r.srv.LocalAddr().String() + "/fw/" + r.im.ID
	// HTTP on loopback outruns any kill; this server paces the body so
	// that the kill lands mid-transfer. Strong ETag and Range as usual.
	pkg, err := os.ReadFile(r.pkgFile)
	if err != nil {
		t.Fatal(err)
	}
	_, httpAddr := serveHTTP(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("ETag", `"pkg"`)
		http.ServeContent(slowWriter{w}, req, "", time.Time{}, bytes.NewReader(pkg))
	}))
	httpURI := "http://" + httpAddr + "/fw.pkg"
	kills := 0
	var summary []string

	// Kill during a push: a push cannot resume, so the device ends Idle
	// with Connection lost, or Downloaded if the last block got in.
	for i := range 5 {
		r.fresh(fmt.Sprintf("push-%d", i))
		r.start()
		frac := 0.05 + 0.9*rng.Float64()
		ctx, cancel := context.WithCancel(context.Background())
		var once sync.Once
		done := make(chan error, 1)
		go func() {
			done <- r.srv.Push(ctx, r.ep, r.pkgFile, func(sent, total int64) {
				if float64(sent) >= frac*float64(total) {
					once.Do(r.kill)
				}
			})
		}()
		<-done
		cancel()
		once.Do(r.kill)
		kills++
		r.start()
		s, res := r.settle(20 * time.Second)
		if !(s == fwupdate.StateIdle && (res == fwupdate.ResultConnectionLost || res == fwupdate.ResultInitial) || s == fwupdate.StateDownloaded) {
			t.Errorf("push killed at %.0f%%: %v/%v after restart, want Idle/4 or Downloaded", 100*frac, s, res)
		}
		summary = append(summary, fmt.Sprintf("push@%.0f%%→%v/%d", 100*frac, s, res))
		r.stop()
	}

	// Kill during a pull, over CoAP and over HTTP: after the restart the
	// download resumes (or restarts) by itself and ends byte-exact.
	for _, uri := range []string{coapURI, httpURI} {
		scheme := uri[:strings.Index(uri, ":")]
		for i := range 5 {
			r.fresh(fmt.Sprintf("pull-%s-%d", scheme, i))
			r.start()
			at := int64((0.05 + 0.9*rng.Float64()) * float64(pkgSize))
			r.writeURI(uri)
			deadline := time.Now().Add(20 * time.Second)
			for r.partSize() < at && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			r.kill()
			kills++
			before := r.partSize()
			r.start()
			s, res := r.settle(30 * time.Second)
			if s != fwupdate.StateDownloaded || res != fwupdate.ResultInitial {
				t.Errorf("%s pull killed at %d bytes: %v/%v after restart, want Downloaded/0; log:\n%s", scheme, before, s, res, r.log)
			}
			how := "restarted"
			if strings.Contains(r.log.String(), "resuming download after restart") && !strings.Contains(r.log.String(), "cannot resume") {
				how = "resumed"
			}
			summary = append(summary, fmt.Sprintf("%s@%dB→%v/%d %s", scheme, before, s, res, how))
			r.stop()
		}
	}

	// Kill right after Downloaded: still Downloaded, with the same bytes.
	for i := range 3 {
		r.fresh(fmt.Sprintf("downloaded-%d", i))
		r.start()
		r.writeURI(httpURI)
		if s, _ := r.settle(20 * time.Second); s != fwupdate.StateDownloaded {
			t.Fatalf("pull did not complete: %v", s)
		}
		r.kill()
		kills++
		r.start()
		s, res := r.stateResult()
		if s != fwupdate.StateDownloaded || res != fwupdate.ResultInitial {
			t.Errorf("killed in Downloaded: %v/%v after restart", s, res)
		}
		r.checkDownloaded("after restart")
		summary = append(summary, fmt.Sprintf("downloaded→%v/%d", s, res))
		r.stop()
	}

	// Kill during Updating, at a random moment in the 0–250 ms around the
	// install and re-exec: the device ends Idle/1 with the new firmware in
	// place, or back in Downloaded (result 8, or 0 if Update never took).
	for i := range 5 {
		r.fresh(fmt.Sprintf("update-%d", i))
		r.start()
		r.writeURI(httpURI)
		if s, _ := r.settle(20 * time.Second); s != fwupdate.StateDownloaded {
			t.Fatalf("pull did not complete: %v", s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := r.srv.Execute(ctx, r.ep, model.NewPath(5, 0, 2), "")
		cancel()
		if err != nil {
			t.Fatalf("execute Update: %v", err)
		}
		wait := time.Duration(rng.IntN(250)) * time.Millisecond
		time.Sleep(wait)
		r.kill()
		kills++
		r.start()
		s, res := r.settle(20 * time.Second)
		switch {
		case s == fwupdate.StateIdle && res == fwupdate.ResultSuccess:
			fw, err := os.ReadFile(filepath.Join(r.dir, "firmware.bin"))
			if err != nil || !bytes.Equal(fw, r.payload) {
				t.Errorf("Success reported but firmware.bin (%d bytes, %v) is not the payload", len(fw), err)
			}
		case s == fwupdate.StateDownloaded && (res == fwupdate.ResultUpdateFailed || res == fwupdate.ResultInitial):
		default:
			t.Errorf("killed %v after Update: %v/%v after restart; log:\n%s", wait, s, res, r.log)
		}
		summary = append(summary, fmt.Sprintf("update+%v→%v/%d", wait, s, res))
		r.stop()
	}
	t.Logf("%d kills: %s", kills, strings.Join(summary, "; "))
	if kills < 20 {
		t.Fatalf("only %d kills", kills)
	}
}

package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// bsCrashRig runs the real `lwm2m client -bootstrap` against a scripted
// bootstrap server that kills the device (supervisor and program, as a
// power loss) at a chosen step of the bootstrap.
type bsCrashRig struct {
	t   *testing.T
	bin string
	srv *lwm2mtest.Server
	bs  *lwm2mtest.BootstrapServer
	dir string
	ep  string
	log *syncbuf.Buffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	plan   func(ctx context.Context, r lwm2mtest.BootstrapRequest)
}

// bsWrites are the Bootstrap-Writes of a full configuration, in order.
func (r *bsCrashRig) bsWrites() []struct {
	p    model.Path
	recs []model.Record
} {
	return []struct {
		p    model.Path
		recs []model.Record
	}{
		{model.NewPath(0, 1), []model.Record{
			{Path: model.NewPath(0, 1, 0), Value: model.String(r.srv.URI())},
			{Path: model.NewPath(0, 1, 1), Value: model.Bool(false)},
			{Path: model.NewPath(0, 1, 2), Value: model.Int(int64(lwm2m.SecurityNoSec))},
			{Path: model.NewPath(0, 1, 10), Value: model.Int(5)},
		}},
		{model.NewPath(1, 0), []model.Record{
			{Path: model.NewPath(1, 0, 0), Value: model.Int(5)},
			{Path: model.NewPath(1, 0, 1), Value: model.Int(60)},
			{Path: model.NewPath(1, 0, 6), Value: model.Bool(false)},
			{Path: model.NewPath(1, 0, 7), Value: model.String("U")},
		}},
		{model.NewPath(1, 0, 1), []model.Record{{Path: model.NewPath(1, 0, 1), Value: model.Int(77)}}},
	}
}

// write sends writes[:n] and reports whether all were accepted.
func (r *bsCrashRig) write(ctx context.Context, conn lwm2mtest.BootstrapRequest, n int) error {
	if resp, err := lwm2mtest.Do(ctx, conn.Conn, codes.DELETE, "/", -1, nil); err != nil || resp.Code != codes.Deleted {
		return fmt.Errorf("Bootstrap-Delete /: %v %v", resp.Code, err)
	}
	for _, w := range r.bsWrites()[:n] {
		f := content.TLV
		if w.p.Len() == 3 {
			f = content.TextPlain
		}
		body, err := content.Encode(f, w.p, w.recs)
		if err != nil {
			return err
		}
		if resp, err := lwm2mtest.Do(ctx, conn.Conn, codes.PUT, w.p.String(), int(f), body); err != nil || resp.Code != codes.Changed {
			return fmt.Errorf("Bootstrap-Write %s: %v %v", w.p, resp.Code, err)
		}
	}
	return nil
}

func (r *bsCrashRig) setPlan(f func(ctx context.Context, req lwm2mtest.BootstrapRequest)) {
	r.mu.Lock()
	r.plan = f
	r.mu.Unlock()
}

// start runs the device in a process group of its own.
func (r *bsCrashRig) start() {
	r.t.Helper()
	cmd := exec.Command(r.bin, "client", "-endpoint", r.ep, "-bootstrap", r.bs.URI(), "-state-dir", r.dir, "-lifetime", "60")
	cmd.Stdout, cmd.Stderr = r.log, r.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.mu.Lock()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()
}

// kill sends SIGKILL to the device's process group: no deferred code runs.
func (r *bsCrashRig) kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.mu.Unlock()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

func (r *bsCrashRig) waitExited() {
	r.t.Helper()
	r.mu.Lock()
	exited := r.exited
	r.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		r.t.Fatalf("%s: the device was never killed; log:\n%s", r.ep, r.log)
	}
}

// checkStored asserts that the state directory holds no configuration or
// a complete one, and no temporary file. It reports whether one is there.
func (r *bsCrashRig) checkStored(when string) bool {
	r.t.Helper()
	if left, _ := filepath.Glob(filepath.Join(r.dir, ".provisioning.json.tmp*")); len(left) > 0 {
		// Left by the kill; the next start removes them (checked after it).
		r.t.Logf("%s %s: temporary files left by the kill: %v", r.ep, when, left)
	}
	p, err := lwm2m.NewFileProvisioningStore(filepath.Join(r.dir, "provisioning.json")).Load(context.Background())
	if errors.Is(err, lwm2m.ErrNotProvisioned) {
		return false
	}
	if err != nil {
		r.t.Fatalf("%s %s: %v", r.ep, when, err)
	}
	if err := p.Validate(); err != nil {
		r.t.Fatalf("%s %s: a half-written configuration was stored: %v", r.ep, when, err)
	}
	for _, w := range r.bsWrites() {
		for _, want := range w.recs {
			found := false
			for _, got := range p.Records {
				found = found || got.Path == want.Path
			}
			if !found {
				r.t.Fatalf("%s %s: stored configuration lacks %s", r.ep, when, want.Path)
			}
		}
	}
	return true
}

// A SIGKILL during the Bootstrap-Writes, or just before or after
// Bootstrap-Finish, never leaves a half-written configuration: the next
// start bootstraps again (nothing was stored) or registers at once with
// the complete configuration.
func TestBootstrapCrash(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the device program")
	}
	bin, err := buildDevice()
	if err != nil {
		t.Fatal(err)
	}
	r := &bsCrashRig{t: t, bin: bin, srv: lwm2mtest.Start(t, "")}
	r.bs = lwm2mtest.StartBootstrap(t, func(ctx context.Context, req lwm2mtest.BootstrapRequest) {
		r.mu.Lock()
		plan := r.plan
		r.mu.Unlock()
		plan(ctx, req)
	})
	full := func(ctx context.Context, req lwm2mtest.BootstrapRequest) {
		if err := r.write(ctx, req, len(r.bsWrites())); err != nil {
			t.Errorf("%s: %v", r.ep, err)
			return
		}
		if resp, err := req.Finish(ctx); err != nil || resp.Code != codes.Changed {
			t.Errorf("%s: Finish %v %v", r.ep, resp.Code, err)
		}
	}
	type scenario struct {
		name       string
		plan       func(ctx context.Context, req lwm2mtest.BootstrapRequest)
		stored     bool // the kill came after the 2.04 to Finish: the configuration must be there
		mayBeStore bool // the kill raced Finish: either outcome
	}
	var scenarios []scenario
	for n := 0; n <= len(r.bsWrites()); n++ {
		scenarios = append(scenarios, scenario{name: fmt.Sprintf("after-%d-writes", n), plan: func(ctx context.Context, req lwm2mtest.BootstrapRequest) {
			if err := r.write(ctx, req, n); err != nil {
				t.Errorf("%s: %v", r.ep, err)
			}
			r.kill()
		}})
	}
	scenarios = append(scenarios,
		scenario{name: "with-finish", mayBeStore: true, plan: func(ctx context.Context, req lwm2mtest.BootstrapRequest) {
			if err := r.write(ctx, req, len(r.bsWrites())); err != nil {
				t.Errorf("%s: %v", r.ep, err)
			}
			go func() { _, _ = lwm2mtest.Do(ctx, req.Conn, codes.POST, "/bs", -1, nil) }()
			r.kill()
		}},
		scenario{name: "after-finish", stored: true, plan: func(ctx context.Context, req lwm2mtest.BootstrapRequest) {
			if err := r.write(ctx, req, len(r.bsWrites())); err != nil {
				t.Errorf("%s: %v", r.ep, err)
			}
			if resp, err := lwm2mtest.Do(ctx, req.Conn, codes.POST, "/bs", -1, nil); err != nil || resp.Code != codes.Changed {
				t.Errorf("%s: Finish %v %v", r.ep, resp.Code, err)
			}
			r.kill()
		}},
	)
	for _, sc := range scenarios {
		r.dir, r.ep, r.log = t.TempDir(), "bscrash-"+sc.name, &syncbuf.Buffer{}
		for len(r.bs.Requests) > 0 {
			<-r.bs.Requests
		}
		r.setPlan(sc.plan)
		r.start()
		r.waitExited()
		stored := r.checkStored("after the kill")
		switch {
		case sc.stored && !stored:
			t.Fatalf("%s: Finish was answered 2.04 but nothing is stored; log:\n%s", r.ep, r.log)
		case !sc.stored && !sc.mayBeStore && stored:
			t.Fatalf("%s: a configuration was stored before Finish; log:\n%s", r.ep, r.log)
		}
		for len(r.bs.Requests) > 0 {
			<-r.bs.Requests
		}

		// The next start bootstraps again, or registers at once.
		r.setPlan(full)
		r.start()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		reg, err := r.srv.WaitRegister(ctx, r.ep)
		cancel()
		if err != nil {
			t.Fatalf("%s: no registration after the restart: %v; log:\n%s", r.ep, err, r.log)
		}
		again := len(r.bs.Requests) > 0
		if stored && again {
			t.Errorf("%s: bootstrapped again with a complete configuration stored", r.ep)
		}
		if !stored && !again {
			t.Errorf("%s: registered without bootstrapping and without a configuration", r.ep)
		}
		if got := fmt.Sprint(reg.Query); !contains(reg.Query, "lt=77") {
			t.Errorf("%s: registered with %s, want the provisioned lifetime 77", r.ep, got)
		}
		if again {
			select {
			case <-r.bs.Finished:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: no answer to the second Finish", r.ep)
			}
		}
		r.kill()
		r.waitExited()
		if !r.checkStored("after the restart") {
			t.Errorf("%s: registered, but nothing is stored", r.ep)
		}
		if left, _ := filepath.Glob(filepath.Join(r.dir, ".provisioning.json.tmp*")); len(left) > 0 {
			t.Errorf("%s: temporary files left after the restart: %v", r.ep, left)
		}
		_ = os.RemoveAll(r.dir)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

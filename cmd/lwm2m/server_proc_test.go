package main

// Helpers for the end-to-end tests of "lwm2m server": they run the built
// program as separate server and device processes on loopback.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"

	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// e2eBuffer collects a process's output; safe for concurrent use.
type e2eBuffer struct{ syncbuf.Buffer }

// tail returns the last n bytes, for failure reports.
func (b *e2eBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// testDir is a folder for the whole test binary run, made and removed by
// TestMain.
var testDir string

// build builds the program once per test binary run, into testDir.
var build = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(testDir, "lwm2m")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// e2eBuild returns the program, built once for all the tests.
func e2eBuild(t *testing.T) string {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// e2eProc is a running process of the program.
type e2eProc struct {
	name string
	cmd  *exec.Cmd
	out  *e2eBuffer // stdout
	log  *e2eBuffer // stderr
	done chan struct{}
	err  error
}

func e2eStart(t *testing.T, name, bin string, args ...string) *e2eProc {
	t.Helper()
	return startEnv(t, nil, name, bin, args...)
}

// stop ends the process with SIGTERM, and SIGKILL if it lingers.
func (p *e2eProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// e2eStopAll stops ps concurrently and returns when all have exited.
func e2eStopAll(ps []*e2eProc) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop()
		}()
	}
	wg.Wait()
}

// e2eServer is an "lwm2m server" process and the addresses it printed.
type e2eServer struct {
	*e2eProc
	coap, coaps, api, http string
}

// e2eStartServer runs "lwm2m server ARGS" and waits for its
// "listening coap=... api=..." line.
func e2eStartServer(t *testing.T, bin string, args ...string) *e2eServer {
	t.Helper()
	p := e2eStart(t, "server", bin, append([]string{"server", "-api", "127.0.0.1:0"}, args...)...)
	line := e2eFirstLine(t, 20*time.Second, p.out.String, p.exited)
	if !strings.HasPrefix(line, "listening ") {
		t.Fatalf("server printed %q", line)
	}
	s := &e2eServer{e2eProc: p}
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "coap":
			s.coap = v
		case "coaps":
			s.coaps = v
		case "api":
			s.api = v
		case "http":
			s.http = v
		}
	}
	if s.coap == "" || s.api == "" {
		t.Fatalf("server printed %q", line)
	}
	return s
}

// e2eFirstLine waits for the first line a server prints on out, the one
// with its addresses. It fails the test when exited reports that the
// server ended first.
func e2eFirstLine(t *testing.T, timeout time.Duration, out func() string, exited func() error) string {
	t.Helper()
	var line string
	waitfor.Until(t, timeout, func() error {
		l, _, found := strings.Cut(out(), "\n")
		if found {
			line = l
			return nil
		}
		if err := exited(); err != nil {
			t.Fatal(err)
		}
		return fmt.Errorf("server did not start; stdout %q", out())
	})
	return line
}

// e2eAPI returns the api= address of a server's first line.
func e2eAPI(t *testing.T, line string) string {
	t.Helper()
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "api="); ok {
			return v
		}
	}
	t.Fatalf("no api= in %q", line)
	return ""
}

// exited returns an error once the process has ended.
func (p *e2eProc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.log.String())
	default:
		return nil
	}
}

// e2eDevice runs "lwm2m client" registered at coapAddr with its state
// under dir/ep.
func e2eDevice(t *testing.T, bin, dir, coapAddr, ep string, extra ...string) *e2eProc {
	t.Helper()
	args := append([]string{"client", "-endpoint", ep, "-server", "coap://" + coapAddr,
		"-state-dir", filepath.Join(dir, ep), "-lifetime", "120", "-retries", "2"}, extra...)
	return e2eStart(t, "device "+ep, bin, args...)
}

// e2eCLI runs a one-shot server command in this process, as the program
// would, against the API at api.
func e2eCLI(t *testing.T, api string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{args[0], "-api", api}, args[1:]...)
	var out, errb bytes.Buffer
	code = runServer(ctx, full, &out, &errb)
	return code, out.String(), errb.String()
}

// e2eMustCLI runs a command that must succeed and returns its stdout.
func e2eMustCLI(t *testing.T, api string, args ...string) string {
	t.Helper()
	code, out, errs := e2eCLI(t, api, args...)
	if code != 0 {
		t.Fatalf("lwm2m server %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// e2eRegistrations reads the server's registrations by endpoint.
func e2eRegistrations(api string) (map[string]server.Registration, error) {
	tok, err := httpapi.ReadToken(srvDefaultTokenFile())
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest("GET", api+"/api/devices", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var regs []server.Registration
	if err := json.NewDecoder(resp.Body).Decode(&regs); err != nil {
		return nil, err
	}
	out := make(map[string]server.Registration, len(regs))
	for _, r := range regs {
		out[r.Endpoint] = r
	}
	return out, nil
}

// e2eWaitRegistered waits until every endpoint is registered with an ID
// other than the one in not (to see a device register again).
func e2eWaitRegistered(t *testing.T, api string, not map[string]string, eps ...string) map[string]server.Registration {
	t.Helper()
	var regs map[string]server.Registration
	waitfor.Until(t, 30*time.Second, func() error {
		var err error
		regs, err = e2eRegistrations(api)
		if err != nil {
			return fmt.Errorf("not registered: %w", err)
		}
		for _, ep := range eps {
			if r, ok := regs[ep]; !ok || r.ID == not[ep] {
				return fmt.Errorf("not registered: %s", ep)
			}
		}
		return nil
	})
	return regs
}

// e2ePack builds a package with "lwm2m pack" (signed when key is set).
func e2ePack(t *testing.T, in, out, version, key string) {
	t.Helper()
	args := []string{"-in", in, "-out", out, "-name", "e2e-firmware", "-version", version}
	if key != "" {
		args = append(args, "-signing-key", key)
	}
	var o, e bytes.Buffer
	if code := runPack(context.Background(), args, &o, &e); code != 0 {
		t.Fatalf("lwm2m pack: exit %d: %s", code, e.String())
	}
}

// e2eRead returns the value line of "read -ep EP PATH" for a resource.
func e2eRead(t *testing.T, api, ep, path string) string {
	t.Helper()
	return strings.TrimSpace(e2eMustCLI(t, api, "read", "-ep", ep, path))
}

func e2eWant(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: want %q in:\n%s", what, w, got)
		}
	}
}

func e2eEP(i int) string { return fmt.Sprintf("dev-%02d", i) }

package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/objects"
)

// nodeLibDir finds node and the lwm2m-node-lib installation; it skips
// (locally) or fails (in CI) when either is missing.
func nodeLibDir(t *testing.T) (node, dir string) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") == "" {
			t.Skipf(format, args...)
		}
		t.Fatalf(format, args...)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not installed: %v", err)
	}
	dir = os.Getenv("LWM2M_NODE_LIB_DIR")
	if dir == "" {
		missing("LWM2M_NODE_LIB_DIR not set; run: export LWM2M_NODE_LIB_DIR=$(bash .ci/install-nodelib.sh)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "lwm2m-node-lib", "package.json")); err != nil {
		missing("lwm2m-node-lib not installed in LWM2M_NODE_LIB_DIR: %v", err)
	}
	return node, dir
}

// step is one line of interop/nodelib/server.js's output.
type step struct {
	Step     string `json:"step"`
	Error    string `json:"error"`
	Port     int    `json:"port"`
	Endpoint string `json:"endpoint"`
	Lifetime string `json:"lifetime"`
	Version  string `json:"version"`
	Binding  string `json:"binding"`
	Payload  string `json:"payload"`
	Address  string `json:"address"`
	Path     string `json:"path"`
	Value    string `json:"value"`
	Response string `json:"response"`
}

// script is a running server.js.
type script struct {
	t      *testing.T
	cmd    *exec.Cmd
	steps  chan step
	stderr *syncbuf.Buffer
}

// startScript runs server.js with args and reads its steps.
func startScript(t *testing.T, node, dir string, args ...string) *script {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	args = append([]string{filepath.Join("nodelib", "server.js"), "--lib", dir, "--port", "0", "--timeout", "60"}, args...)
	cmd := exec.CommandContext(ctx, node, args...)
	s := &script{t: t, cmd: cmd, steps: make(chan step, 32), stderr: &syncbuf.Buffer{}}
	cmd.Stderr = s.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(s.steps)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var st step
			if err := json.Unmarshal(sc.Bytes(), &st); err != nil || st.Step == "" {
				continue // not one of ours
			}
			s.steps <- st
		}
	}()
	t.Cleanup(func() {
		cancel() // kills the script if it is still running
		for range s.steps {
			// drain, so that the reader never blocks
		}
		<-readDone
		cmd.Wait()
		if t.Failed() {
			t.Logf("server.js stderr:\n%s", s.stderr.String())
		}
	})
	return s
}

// expect returns the next step, which must be name and must not be an error.
func (s *script) expect(name string) step {
	s.t.Helper()
	select {
	case st, ok := <-s.steps:
		if !ok {
			s.t.Fatalf("server.js ended before step %q", name)
		}
		s.t.Logf("server.js: %+v", st)
		if st.Error != "" {
			s.t.Fatalf("server.js step %q failed: %s", st.Step, st.Error)
		}
		if st.Step != name {
			s.t.Fatalf("server.js step = %q, want %q (%+v)", st.Step, name, st)
		}
		return st
	case <-time.After(30 * time.Second):
		s.t.Fatalf("no step %q from server.js within 30 s", name)
	}
	return step{}
}

// wait checks that the script exits 0.
func (s *script) wait() {
	s.t.Helper()
	for st := range s.steps {
		s.t.Errorf("unexpected step after the last one: %+v", st)
	}
	if err := s.cmd.Wait(); err != nil {
		s.t.Fatalf("server.js: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestNodeLibServer runs our client against lwm2m-node-lib's server, which
// registers it, reads, writes, executes, discovers, writes attributes and
// observes, and checks each
// operation on both sides. Subtests vary how the server asks for values:
// without an Accept option (the library's default) and with text/plain.
//
// These subtests have the server send its registration location as one
// Location-Path option per segment (RFC 7252 §5.10.7); the library itself
// sends "rd/N" in one option, which TestNodeLibLocationInOneOption covers.
func TestNodeLibServer(t *testing.T) {
	node, dir := nodeLibDir(t)
	for _, tc := range []struct {
		name   string
		accept string
	}{
		{"no-accept", ""},
		{"accept-text-plain", "text/plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testNodeLibServer(t, node, dir, "--location", "split", "--accept", tc.accept)
		})
	}
}

// TestNodeLibLocationInOneOption runs the same script against the library
// unchanged: it answers Register with the single Location-Path option
// "rd/1" (against RFC 7252 §5.10.7), which the client must still accept.
func TestNodeLibLocationInOneOption(t *testing.T) {
	node, dir := nodeLibDir(t)
	testNodeLibServer(t, node, dir)
}

// TestNodeLibDraftWriteFormat lets the library write and execute with its
// own default Content-Format, 1541 from the LwM2M 1.0 drafts, which the
// client takes as text/plain.
func TestNodeLibDraftWriteFormat(t *testing.T) {
	node, dir := nodeLibDir(t)
	testNodeLibServer(t, node, dir, "--write-format", "application-vnd-oma-lwm2m/text")
}

func testNodeLibServer(t *testing.T, node, dir string, args ...string) {
	srv := startScript(t, node, dir, args...)
	port := srv.expect("listening").Port
	if port <= 0 {
		t.Fatalf("server.js listens on port %d", port)
	}

	const endpoint = "interop-nodelib"
	c, err := lwm2m.New(lwm2m.Config{
		Endpoint: endpoint,
		Server:   "coap://127.0.0.1:" + strconv.Itoa(port),
		Lifetime: 60 * time.Second,
		Logger:   testLogger(t),
		// lwm2m-node-lib never acknowledges confirmable notifications
		// (its proxy drops the ACK); keep the retransmissions short.
		Tx: lwm2m.TxParams{AckTimeout: 500 * time.Millisecond, MaxRetransmit: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	rebooted := make(chan struct{})
	var once sync.Once
	dev := objects.NewDevice(objects.DeviceInfo{
		Manufacturer:    "Acme",
		ModelNumber:     "M1",
		FirmwareVersion: "1.0",
		Reboot:          func() { once.Do(func() { close(rebooted) }) },
	})
	if err := c.AddObject(dev); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-runDone; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)

	// Register: the server saw our endpoint, parameters and object list.
	reg := srv.expect("register")
	if reg.Endpoint != endpoint {
		t.Errorf("registered endpoint = %q, want %q", reg.Endpoint, endpoint)
	}
	if reg.Lifetime != "60" || reg.Version != "1.1" || reg.Binding != "U" {
		t.Errorf("registration lt=%q lwm2m=%q b=%q, want 60, 1.1, U", reg.Lifetime, reg.Version, reg.Binding)
	}
	// The root link without ct= (TLV is the default), the form Wakaama,
	// Leshan, Anjay and lwm2m-node-lib all accept.
	if root := `</>;rt="oma.lwm2m",`; !strings.HasPrefix(reg.Payload, root) {
		t.Errorf("registration payload %q does not start with %s", reg.Payload, root)
	}
	for _, link := range []string{"</1/0>", "</3>;ver=1.1", "</3/0>"} {
		if !strings.Contains(reg.Payload, link) {
			t.Errorf("registration payload %q lacks %s", reg.Payload, link)
		}
	}
	if strings.Contains(reg.Payload, "</0/") {
		t.Errorf("registration payload %q lists the Security object", reg.Payload)
	}
	if reg.Address != "127.0.0.1" {
		t.Errorf("server saw the client at %q, want 127.0.0.1", reg.Address)
	}

	// Read: the value we serve, as plain text.
	if rd := srv.expect("read"); rd.Path != "/3/0/0" || rd.Value != "Acme" {
		t.Errorf("read %s = %q, want /3/0/0 = %q", rd.Path, rd.Value, "Acme")
	}

	// Write: the value reached the Device object.
	srv.expect("write")
	if v, ok := dev.Get(0, objects.DeviceTimezone); !ok || v.Str != "Europe/Madrid" {
		t.Errorf("/3/0/15 after write = %v (set %v), want Europe/Madrid", v, ok)
	}
	// Writing the lifetime makes the client send an Update with it.
	srv.expect("write")
	if upd := srv.expect("update"); upd.Lifetime != "120" {
		t.Errorf("update lt = %q, want 120", upd.Lifetime)
	}

	// Execute: Reboot ran.
	srv.expect("execute")
	select {
	case <-rebooted:
	case <-time.After(10 * time.Second):
		t.Error("execute /3/0/4 did not run the Reboot function")
	}

	// Discover lists the instance's resources; Write-Attributes sets
	// attributes that a Discover of the resource then shows.
	if d := srv.expect("discover"); d.Path != "/3/0" || !containsAll(d.Value, "</3/0>", "</3/0/0>", "</3/0/4>", "</3/0/11>;dim=1") {
		t.Errorf("discover %s = %q, want /3/0 with </3/0/0>, </3/0/4>, </3/0/11>;dim=1", d.Path, d.Value)
	}
	srv.expect("attributes")
	if d := srv.expect("discover"); d.Path != "/3/0/0" || !containsAll(d.Value, "</3/0/0>", "pmin=0", "pmax=60") {
		t.Errorf("discover %s = %q, want /3/0/0 with pmin=0 and pmax=60", d.Path, d.Value)
	}

	// Observe, then change the value here: the notification carries it.
	if ob := srv.expect("observe"); ob.Value != "Acme" {
		t.Errorf("observe /3/0/0 first value = %q, want Acme", ob.Value)
	}
	dev.Set(0, objects.DeviceManufacturer, model.String("Acme Interop"))
	if n := srv.expect("notify"); n.Path != "/3/0/0" || n.Value != "Acme Interop" {
		t.Errorf("notification %s = %q, want /3/0/0 = %q", n.Path, n.Value, "Acme Interop")
	}
	srv.expect("done")

	// Stopping the client de-registers it.
	stop()
	if d := srv.expect("deregister"); d.Endpoint != endpoint {
		t.Errorf("de-registered endpoint = %q, want %q", d.Endpoint, endpoint)
	}
	srv.wait()
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// runDemo implements "lwm2m demo": a server and a real device process on
// loopback; the device is updated to v2 by pull over CoAP and to v3 by
// push, its supervisor starting each new program on trial.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keep := fs.Bool("keep", false, "keep the demo's temporary folder")
	verbose := fs.Bool("v", false, "show the device's and the server's logs")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: lwm2m demo [flags]\n\nStarts an LwM2M server and a device on loopback, then updates the device\nto v2 by pull over CoAP and to v3 by push. The device replaces its own\nprogram each time; its supervisor starts the new one on trial and keeps it\nonce it has registered.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "lwm2m demo: -timeout %v: must be positive\n", *timeout)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	d := &demo{out: stdout, verbose: *verbose, stderr: stderr}
	err := d.run(ctx, *keep)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m demo: %v\n", err)
		return 1
	}
	return 0
}

type demo struct {
	out, stderr io.Writer
	verbose     bool
	dir         string
	srv         *server.Server
	device      *exec.Cmd
	devDone     chan error
}

type demoStep struct {
	name, method, version string
	bytes                 int64
	took                  time.Duration
	result                fwobj.Result
}

const demoEndpoint = "demo-device"

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *demo) run(ctx context.Context, keep bool) error {
	dir, err := os.MkdirTemp("", "lwm2m-demo-")
	if err != nil {
		return err
	}
	d.dir = dir
	if keep {
		defer d.say("files kept in %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	// The device runs a copy of this program, which its updates replace.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	devExe := filepath.Join(dir, "device", "lwm2m")
	if err := copyFile(self, devExe, 0o755); err != nil {
		return err
	}
	pub, priv, err := fwpkg.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pubPEM, err := fwpkg.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	trusted := filepath.Join(dir, "trusted.pub")
	if err := os.WriteFile(trusted, pubPEM, 0o600); err != nil {
		return err
	}
	var pkgs [2]string
	for i, v := range []string{"2.0", "3.0"} {
		pkgs[i] = filepath.Join(dir, "lwm2m-"+v+".pkg")
		if err := packFile(self, pkgs[i], "lwm2m-reference", v, priv); err != nil {
			return err
		}
	}
	st, err := os.Stat(pkgs[0])
	if err != nil {
		return err
	}
	d.say("built signed packages v2.0 and v3.0 of this program (%s each)", humanBytes(float64(st.Size())))

	logw := io.Discard
	if d.verbose {
		logw = prefixWriter(d.stderr, "server | ")
	}
	d.srv = &server.Server{Addr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", PublicHost: "127.0.0.1",
		Logger: slog.New(slog.NewTextHandler(logw, nil))}
	if err := d.srv.Listen(); err != nil {
		return err
	}
	sctx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	go d.srv.Serve(sctx)
	d.say("LwM2M server listening on coap://%s", d.srv.LocalAddr())

	if err := d.startDevice(devExe, trusted); err != nil {
		return err
	}
	defer d.stopDevice()
	start := time.Now()
	if err := d.waitRegistered(ctx); err != nil {
		return err
	}
	v, err := d.firmwareVersion(ctx)
	if err != nil {
		return err
	}
	d.say("device %q registered (pid %d) after %v, firmware %s", demoEndpoint, d.device.Process.Pid, time.Since(start).Round(time.Millisecond), v)

	steps := []demoStep{
		{name: "pull", method: "pull over CoAP (Block2)", version: "2.0"},
		{name: "push", method: "push over CoAP (Block1)", version: "3.0"},
	}
	for i := range steps {
		s := &steps[i]
		method := server.PullCoAP
		if s.name == "push" {
			method = server.Push
		}
		d.say("\nupdate to v%s by %s", s.version, s.method)
		if st, err := os.Stat(pkgs[i]); err == nil {
			s.bytes = st.Size()
		}
		t0 := time.Now()
		res, err := d.srv.Update(ctx, demoEndpoint, pkgs[i], method, d.showProgress(method))
		s.took, s.result = time.Since(t0), res
		if err != nil {
			return fmt.Errorf("update to v%s: %w", s.version, err)
		}
		got, err := d.firmwareVersion(ctx)
		if err != nil {
			return err
		}
		if got != s.version {
			return fmt.Errorf("after the update the device reports firmware %q, want %q", got, s.version)
		}
		d.say("  device restarted as v%s by its supervisor (pid %d) and kept after it registered: Update Result %d (%v)", got, d.device.Process.Pid, res, res)
	}

	d.say("\nsummary")
	d.say("  %-6s %-24s %-8s %-10s %-9s %s", "step", "method", "version", "bytes", "time", "result")
	for _, s := range steps {
		d.say("  %-6s %-24s %-8s %-10s %-9v %d %v", s.name, s.method, s.version, humanBytes(float64(s.bytes)), s.took.Round(time.Millisecond), s.result, s.result)
	}
	d.say("  firmware 1.0 → 2.0 → 3.0 in %v", time.Since(start).Round(time.Millisecond))
	return nil
}

// showProgress prints the server's view of an update. State and Update
// Result are notified one by one, so each change gets its own line: a
// line with both would pair a new State with a Result not yet notified.
func (d *demo) showProgress(method server.Method) func(server.Progress) {
	// A push counts what the server sent, a pull what its image server
	// served to the device.
	verb := "served"
	if method == server.Push {
		verb = "pushed"
	}
	lastState, lastResult, lastPct := fwobj.StateUnknown, fwobj.ResultUnknown, int64(-1)
	return func(p server.Progress) {
		switch p.Phase {
		case "deliver":
			if p.Total > 0 {
				if pct := 100 * p.Sent / p.Total; pct/25 != lastPct/25 {
					lastPct = pct
					d.say("  %s %3d%% (%s of %s)", verb, pct, humanBytes(float64(p.Sent)), humanBytes(float64(p.Total)))
				}
			}
		case "uri":
			d.say("  wrote Package URI %s", p.URI)
		case "state":
			if p.State >= 0 && p.State != lastState {
				lastState = p.State
				d.say("  /5/0/3 State = %d (%s)", p.State, p.State)
			}
			if p.Result >= 0 && p.Result != lastResult {
				lastResult = p.Result
				d.say("  /5/0/5 Update Result = %d (%v)", p.Result, p.Result)
			}
		case "execute":
			d.say("  executed /5/0/2 Update")
		case "registered":
			d.say("  device registered again")
		}
	}
}

func (d *demo) startDevice(exe, trusted string) error {
	cmd := exec.Command(exe, "client",
		"-endpoint", demoEndpoint,
		"-server", "coap://"+d.srv.LocalAddr().String(),
		"-state-dir", filepath.Join(d.dir, "state"),
		"-trusted-key", trusted,
		"-firmware-version", "1.0",
		"-lifetime", "60")
	logw := io.Discard
	if d.verbose {
		logw = prefixWriter(d.stderr, "device | ")
	}
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		return err
	}
	d.device = cmd
	d.devDone = make(chan error, 1)
	go func() { d.devDone <- cmd.Wait() }()
	return nil
}

func (d *demo) stopDevice() {
	if d.device == nil {
		return
	}
	_ = d.device.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.devDone:
	case <-time.After(10 * time.Second):
		_ = d.device.Process.Kill()
		<-d.devDone
	}
}

func (d *demo) waitRegistered(ctx context.Context) error {
	for {
		if _, ok := d.srv.Registration(demoEndpoint); ok {
			return nil
		}
		select {
		case err := <-d.devDone:
			return fmt.Errorf("device exited before registering: %v", err)
		case <-ctx.Done():
			return errors.New("device did not register in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (d *demo) firmwareVersion(ctx context.Context) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.srv.Read(rctx, demoEndpoint, model.NewPath(3, 0, 3), content.TextPlain)
	if err != nil {
		return "", fmt.Errorf("reading /3/0/3: %w", err)
	}
	return string(c.Payload), nil
}

func packFile(in, out, name, version string, key []byte) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	o, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := fwpkg.Pack(o, f, st.Size(), name, version, key); err != nil {
		o.Close()
		return err
	}
	return o.Close()
}

func copyFile(from, to string, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// prefixWriter writes each line with a prefix, for interleaved logs.
func prefixWriter(w io.Writer, prefix string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(w, prefix+strings.TrimRight(sc.Text(), "\r"))
		}
	}()
	return pw
}

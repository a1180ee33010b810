package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
	"github.com/lwm2m-fota/lwm2m/objects"
)

// runClient implements "lwm2m client": a device that registers, serves
// /0, /1, /3 and /5, and really updates itself.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		endpoint   = fs.String("endpoint", "", "endpoint name (required)")
		serverURI  = fs.String("server", "", "LwM2M server `URI`, coap://HOST:PORT (this, -bootstrap or -config is required)")
		bsURI      = fs.String("bootstrap", "", "bootstrap server `URI`, coap://HOST:PORT or coaps://HOST:PORT: the device bootstraps once, keeps what it was given in -state-dir and registers with it from then on")
		factory    = fs.String("config", "", "factory configuration `FILE` (JSON: Security and Server instances, see docs/BOOTSTRAP.md)")
		stateDir   = fs.String("state-dir", "", "`DIR` for the firmware and the update state (required)")
		lifetime   = fs.Int("lifetime", 300, "registration lifetime in `SEC`onds (the library's default is the spec's 86400; a lab device wants to be seen gone sooner)")
		version    = fs.String("firmware-version", "1.0", "version reported before any update is installed")
		trusted    = fs.String("trusted-key", "", "ed25519 public key `FILE`: packages must be signed by it")
		maxSize    = fs.Int64("max-package-size", 512<<20, "largest package accepted, in `BYTES`")
		downloadBS = fs.Int("block-size", 1024, "CoAP block size for pull downloads")
		retries    = fs.Int("retries", 5, "reconnect attempts of an interrupted download")
		verbose    = fs.Bool("v", false, "debug logs")
		lwVersion  = fs.String("lwm2m-version", lwm2m.Version11, "LwM2M `VERSION` to register with: 1.0 or 1.1")
		confirm    = fs.Duration("confirm-timeout", 60*time.Second, "a new program that has not registered within this `DURATION` is rolled back")
		program    = fs.String("program", "", "the device program `FILE` that the supervisor runs and updates replace (default: this program); run the supervisor from a copy that updates never replace, so that a trial cut short by a power loss is rolled back even if the new program hangs or cannot start")
		cred       = addCredFlags(fs, "for a coaps:// server or bootstrap server", "for a coaps:// server or bootstrap server")
		// Queue mode (LwM2M 1.1 Core §6.5), lwm2m/queue.go.
		queue       = fs.Bool("queue", false, "register in queue mode: sleep (socket closed) between exchanges, wake for Updates and due notifications")
		queueWindow = fs.Duration("queue-window", 0, "with -queue, how long to stay reachable after the last exchange, a Go `DURATION` such as 5s (default MAX_TRANSMIT_WAIT, 93s)")
	)
	// Package download credentials (-fw-*, credentials.go).
	fwCred := addFwCredFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: lwm2m client -endpoint EP -server coap://HOST:PORT -state-dir DIR [flags]\n       lwm2m client -endpoint EP -bootstrap coap://HOST:PORT -state-dir DIR [flags]\n       lwm2m client -endpoint EP -config FILE -state-dir DIR [flags]\n       lwm2m client ... -server coaps://HOST:PORT -psk-identity ID -psk-key HEX\n       lwm2m client ... -server coaps://HOST:PORT -cert FILE -key FILE -server-cert FILE\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	if *endpoint == "" || *serverURI == "" && *bsURI == "" && *factory == "" || *stateDir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "lwm2m client: need -endpoint, -state-dir and one of -server, -bootstrap and -config, and no other arguments")
		fs.Usage()
		return 2
	}
	if *lwVersion != lwm2m.Version10 && *lwVersion != lwm2m.Version11 {
		fmt.Fprintf(stderr, "lwm2m client: -lwm2m-version %q: want 1.0 or 1.1\n", *lwVersion)
		return 2
	}
	if err := checkClientRanges(*lifetime, *maxSize, *downloadBS, *retries, *confirm); err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 2
	}
	if *queueWindow < 0 || *queueWindow > 0 && !*queue {
		fmt.Fprintln(stderr, "lwm2m client: -queue-window needs -queue and a positive duration")
		return 2
	}
	fwSec, err := fwCred.security()
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 2
	}
	if err := prepareStateDir(*stateDir); err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var key ed25519.PublicKey
	if *trusted != "" {
		b, err := os.ReadFile(*trusted)
		if err == nil {
			key, err = fwpkg.ParsePublicKey(b)
		}
		if err != nil {
			fmt.Fprintf(stderr, "lwm2m client: -trusted-key: %v\n", err)
			return 2
		}
	}
	exe, err := devicePath(*program)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 1
	}

	cfg := lwm2m.Config{
		Endpoint: *endpoint,
		Server:   *serverURI,
		Lifetime: time.Duration(*lifetime) * time.Second,
		Version:  *lwVersion,
		Logger:   log,

		QueueMode:   *queue,
		QueueWindow: *queueWindow,
	}
	if strings.HasPrefix(*serverURI, "coaps:") {
		sec, err := secureConfig(cred)
		if err == nil {
			err = coaps.Configure(&cfg, sec)
		}
		if err != nil {
			fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
			return 2
		}
	}
	if err := bootstrapConfig(&cfg, *bsURI, *factory, *stateDir, cred, log); err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 2
	}
	c, err := lwm2m.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 2
	}
	if supervisorPID() == 0 {
		// Every flag is checked: from here on the supervisor runs the
		// device as its child (supervise.go).
		sup := &supervisor{exe: exe, args: append([]string{"client"}, args...), stateDir: *stateDir,
			confirmTimeout: *confirm, stdout: stdout, stderr: stderr, log: log}
		return sup.run(ctx)
	}
	dev := &fileDevice{dir: *stateDir, exe: exe, trusted: key, maxPayload: *maxSize, log: log,
		restart: func() { os.Exit(exitRestart) }, crashAt: os.Getenv("LWM2M_CRASH_AT")}
	prog := newProgressBar(stderr)
	obj, err := fwupdate.Install(c, withFwCredentials(dev, fwSec), fwupdate.Config{
		Store:          fwupdate.FileStore{Path: filepath.Join(*stateDir, stateFile)},
		MaxPackageSize: *maxSize,
		Download:       downloadRequest(*downloadBS, *retries),
		Progress:       prog.update,
		Logger:         log,
	})
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 1
	}
	now, trial := dev.settle(obj, loadInstalled(*stateDir, *version))
	device := objects.NewDevice(objects.DeviceInfo{
		Manufacturer:    "lwm2m-fota",
		ModelNumber:     "reference-device",
		SerialNumber:    *endpoint,
		FirmwareVersion: now.Version,
		Reboot: func() {
			obj.Close()
			dev.restart()
		},
	})
	if err := c.AddObject(device); err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 1
	}
	log.Info("device starting", "endpoint", *endpoint, "server", *serverURI, "bootstrap", *bsURI, "config", *factory, "firmware", now.Version, "pid", os.Getpid(), "supervisor", supervisorPID())
	if trial {
		go dev.confirm(ctx, c, obj, now)
	}
	err = c.Run(ctx)
	obj.Close()
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m client: %v\n", err)
		return 1
	}
	return 0
}

// progress shows download progress: a bar redrawn in place on a terminal,
// a log line every few seconds otherwise.
type progressBar struct {
	w    io.Writer
	tty  bool
	mu   sync.Mutex
	last time.Time
}

func newProgressBar(w io.Writer) *progressBar {
	p := &progressBar{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progressBar) update(written, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	every := 5 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	done := total > 0 && written >= total
	if time.Since(p.last) < every && !done {
		return
	}
	p.last = time.Now()
	switch {
	case p.tty && total > 0:
		const width = 40
		n := int(width * written / total)
		fmt.Fprintf(p.w, "\r[%-*s] %3d%% %s", width, strings.Repeat("#", n), 100*written/total, humanBytes(float64(written)))
		if done {
			fmt.Fprintln(p.w)
		}
	case total > 0:
		fmt.Fprintf(p.w, "download: %s of %s (%d%%)\n", humanBytes(float64(written)), humanBytes(float64(total)), 100*written/total)
	default:
		fmt.Fprintf(p.w, "download: %s\n", humanBytes(float64(written)))
	}
}

// secureConfig builds the DTLS transport of a coaps:// server from flags.
func secureConfig(f credFlags) (coaps.Config, error) {
	var cfg coaps.Config
	c, err := f.load()
	if err != nil {
		return cfg, err
	}
	switch {
	case c.psk != nil:
		cfg.PSKIdentity, cfg.PSK = c.pskID, c.psk
	case c.cert != nil:
		cfg.Certificate, cfg.ServerCertificate = c.cert, c.pin
	default:
		return cfg, errors.New("a coaps:// server needs -psk-identity and -psk-key, or -cert and -key")
	}
	return cfg, nil
}

func downloadRequest(blockSize, retries int) download.Request {
	return download.Request{BlockSize: blockSize, Retries: retries, RetryDelay: 2 * time.Second}
}

// checkClientRanges refuses out-of-range values rather than replacing them
// with defaults behind the user's back.
func checkClientRanges(lifetime int, maxSize int64, blockSize, retries int, confirm time.Duration) error {
	switch {
	case confirm <= 0:
		return fmt.Errorf("-confirm-timeout %v: must be positive", confirm)
	case lifetime <= 0:
		return fmt.Errorf("-lifetime %d: must be at least 1 second", lifetime)
	case maxSize <= 0:
		return fmt.Errorf("-max-package-size %d: must be positive", maxSize)
	case blockSize < 16 || blockSize > 1024 || blockSize&(blockSize-1) != 0:
		return fmt.Errorf("-block-size %d: must be a power of two from 16 to 1024 (RFC 7959 §2.2)", blockSize)
	case retries < 0:
		return fmt.Errorf("-retries %d: must be 0 or more", retries)
	}
	return nil
}

// prepareStateDir creates the state directory if needed and says clearly
// when the path cannot be one.
func prepareStateDir(dir string) error {
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return fmt.Errorf("-state-dir %s: not a directory", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("-state-dir %s: cannot create it: %w", dir, err)
	}
	return nil
}

// devicePath is the device program's file: -program if given, else this
// program. Links are resolved, so that an update replaces the file itself.
func devicePath(program string) (string, error) {
	if program == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		program = exe
	}
	p, err := filepath.Abs(program)
	if err == nil {
		p, err = filepath.EvalSymlinks(p)
	}
	if err != nil {
		return "", fmt.Errorf("-program: %w", err)
	}
	return p, nil
}

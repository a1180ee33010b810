package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/console"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// srvDefaultAPIAddr is where one-shot commands find a running server
// unless -api or $LWM2M_SERVER_API says otherwise; srvTokenEnv names the
// token file unless -token-file does.
const (
	srvDefaultAPIAddr = "127.0.0.1:5780"
	srvAPIEnv         = "LWM2M_SERVER_API"
	srvTokenEnv       = "LWM2M_TOKEN_FILE"
)

// srvClient is a one-shot command's view of the API.
type srvClient struct {
	api, token, tokenFile string
	// timeout bounds one device exchange on the server's side; zero
	// leaves the server's default.
	timeout time.Duration
}

type srvSub struct {
	summary, usage string
	run            func(ctx context.Context, c *srvClient, fs *flag.FlagSet, args []string, stdout io.Writer) error
	flags          func(fs *flag.FlagSet)
}

var srvSubs map[string]srvSub

// srvSubNames orders the commands in the usage.
var srvSubNames = []string{"list", "read", "write", "exec", "discover", "write-attr", "delete", "observe", "update", "values", "bootstrap-history", "campaign"}

func init() {
	srvSubs = map[string]srvSub{
		"list":       {"list registered devices", "", srvList, nil},
		"read":       {"read a path", "-ep EP PATH", srvRead, srvDeviceFlags(srvFormatFlag)},
		"write":      {"write a value (plain text) to a resource", "-ep EP PATH VALUE", srvWrite, srvDeviceFlags(nil)},
		"exec":       {"execute a resource", "-ep EP PATH [ARGS]", srvExec, srvDeviceFlags(nil)},
		"discover":   {"discover a path", "-ep EP PATH", srvDiscover, srvDeviceFlags(nil)},
		"write-attr": {"write notification attributes", "-ep EP PATH QUERY (e.g. pmin=1&pmax=60)", srvWriteAttr, srvDeviceFlags(nil)},
		"delete":     {"delete an object instance", "-ep EP PATH", srvDelete, srvDeviceFlags(nil)},
		"observe": {"print notifications until Ctrl-C or -n", "-ep EP [-n N] PATH", srvObserve, func(fs *flag.FlagSet) {
			srvFormatFlag(fs)
			fs.Int("n", 0, "stop after `N` notifications (0: never)")
		}},
		"update": {"update firmware and wait for the result", "-ep EP|-match GLOB -package FILE [-method pull|pull-http|push] [-timeout D]", srvUpdate, func(fs *flag.FlagSet) {
			fs.String("match", "", "update every endpoint matching `GLOB`")
			fs.String("package", "", "firmware package `FILE`, sent to the server in the request")
			fs.String("method", "pull", "delivery `method`: pull (coap), pull-http or push")
			fs.Duration("timeout", 10*time.Minute, "give up after `D`")
		}},
		// Run by srvCampaign: its actions have flags of their own.
		"campaign": {"update campaigns: create, list, show, pause, resume, abort", "ACTION", nil, nil},
		// Send (srvqueue): the last values a device reported.
		"values": {"show the last values a device sent (LwM2M Send)", "-ep EP | EP", srvValues, nil},

		// The bootstrap server (bsserver).
		"bootstrap-history": {"show the bootstrap server's history: every endpoint, or one in detail", "[EP]", srvBootstrapHistory, nil},
	}
}

// srvDeviceFlags adds -timeout, for one exchange with the device, and more.
func srvDeviceFlags(more func(*flag.FlagSet)) func(*flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		fs.Duration("timeout", 30*time.Second, "give up when the device has not answered within `D`")
		if more != nil {
			more(fs)
		}
	}
}

func srvFormatFlag(fs *flag.FlagSet) {
	fs.String("format", "", "content `format` to ask for: text, tlv, senml-json, senml-cbor, opaque or a number")
}

// srvDefaultTokenFile is $LWM2M_TOKEN_FILE, or api-token in the user's
// configuration directory.
func srvDefaultTokenFile() string {
	if f := os.Getenv(srvTokenEnv); f != "" {
		return f
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "lwm2m", "api-token")
}

// srvServerFlags are the flags of the server itself.
type srvServerFlags struct {
	coap, api, coaps, pskFile, http, images, db, host, tokenFile *string
	maxPackage                                                   *int64
	verbose, console                                             *bool
	maxLifetime                                                  *time.Duration
	maxRegs                                                      *int
	packages, packageKey                                         *string
	deviceTimeout                                                *time.Duration
	queueWindow, queueExpiry                                     *time.Duration
	queueMax                                                     *int
	bootstrap                                                    srvBootstrapFlags
}

func srvDefineServerFlags(fs *flag.FlagSet) srvServerFlags {
	return srvServerFlags{
		coap:        fs.String("coap", server.DefaultAddr, "UDP `address` for CoAP (registration and image downloads)"),
		api:         fs.String("api", srvDefaultAPIAddr, "TCP `address` of the HTTP/JSON command API; before a COMMAND, the URL of a running server's API"),
		coaps:       fs.String("coaps", "", "UDP `address` for CoAP over DTLS with PSK (needs -psk-file); e.g. "+server.DefaultDTLSAddr),
		pskFile:     fs.String("psk-file", "", "DTLS credentials `file`: one identity:hexkey per line, # comments"),
		http:        fs.String("http", "", "TCP `address` to serve firmware images over HTTP (for -method pull-http)"),
		images:      fs.String("coap-images", "", "UDP `address` that serves images over CoAP (default: the -coap host, a free port)"),
		db:          fs.String("db", "", "bbolt `file` that keeps registrations across restarts (empty: in memory)"),
		host:        fs.String("public-host", "", "`host` that devices reach this server at, for package URIs"),
		tokenFile:   fs.String("token-file", srvDefaultTokenFile(), "`file` that keeps the API token, made with mode 0600 if missing ($"+srvTokenEnv+")"),
		maxPackage:  fs.Int64("max-package-size", server.DefaultMaxPackageSize, "largest package in `bytes` that update or a campaign upload may send"),
		verbose:     fs.Bool("v", false, "log debug messages"),
		console:     fs.Bool("console", true, "serve the web console on the -api address (sign in with the API token)"),
		maxLifetime: fs.Duration("max-lifetime", server.DefaultMaxLifetime, "cap on a registration's `lifetime`; a longer one is clamped"),
		maxRegs:     fs.Int("max-registrations", server.DefaultMaxRegistrations, "cap on registered endpoints; new ones beyond get 5.03"),
		packages:    fs.String("packages", "", "`directory` of the campaigns' packages (default: DB.packages beside -db; without -db a temporary one)"),
		packageKey:  fs.String("package-key", "", "public key `file` (lwm2m keygen) that checks the signature of uploaded packages"),
		deviceTimeout: fs.Duration("campaign-device-timeout", 30*time.Minute,
			"a campaign device without an outcome `D` after its update started failed"),
		// Queue mode (srvqueue).
		queueWindow: fs.Duration("queue-window", 0, "a queue-mode device is taken to be awake for `D` after it last sent something (0: MAX_TRANSMIT_WAIT, 93s)"),
		queueMax:    fs.Int("queue-max", server.DefaultMaxQueued, "at most `N` operations wait for one sleeping device"),
		queueExpiry: fs.Duration("queue-expiry", 0, "drop an operation after it waited `D` for a sleeping device (0: until the caller gives up)"),
		bootstrap:   srvDefineBootstrapFlags(fs),
	}
}

func srvUsage(w io.Writer) {
	fmt.Fprintln(w, `usage: lwm2m server [flags]
       lwm2m server COMMAND [-api URL] [-token-file FILE] [flags] ARGS

Without a command, runs the LwM2M server. Commands talk to a running server
through its HTTP API (-api, default $`+srvAPIEnv+` or http://`+srvDefaultAPIAddr+`),
with the token from its token file (-token-file, default $`+srvTokenEnv+`
or api-token in the user's configuration directory):`)
	for _, n := range srvSubNames {
		fmt.Fprintf(w, "  %-10s %s\n", n, srvSubs[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'lwm2m server COMMAND -h' for a command's flags.\n\nServer flags:")
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	srvDefineServerFlags(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// srvGlobal are the flags a COMMAND also takes before its name.
var srvGlobal = map[string]bool{"api": true, "token-file": true}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := srvDefineServerFlags(fs)
	fs.Usage = func() { srvUsage(fs.Output()) }
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	if fs.NArg() > 0 {
		name := fs.Arg(0)
		sub, ok := srvSubs[name]
		if !ok {
			fmt.Fprintf(stderr, "lwm2m server: unknown command %q\n", name)
			srvUsage(stderr)
			return 2
		}
		// Global flags before the command go to it; server flags do not
		// belong there.
		var pre []string
		bad := ""
		fs.Visit(func(fl *flag.Flag) {
			if srvGlobal[fl.Name] {
				pre = append(pre, "-"+fl.Name+"="+fl.Value.String())
			} else if bad == "" {
				bad = fl.Name
			}
		})
		if bad != "" {
			fmt.Fprintf(stderr, "lwm2m server %s: -%s is a flag of the server itself, not of %s\n", name, bad, name)
			return 2
		}
		if name == "campaign" {
			return srvCampaign(ctx, append(pre, fs.Args()[1:]...), stdout, stderr)
		}
		return srvRunSub(ctx, name, sub, append(pre, fs.Args()[1:]...), stdout, stderr)
	}
	return srvServe(ctx, f, stdout, stderr)
}

// srvServe runs the server with the flags f until ctx ends.
func srvServe(ctx context.Context, f srvServerFlags, stdout, stderr io.Writer) int {
	level := slog.LevelInfo
	if *f.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s := &server.Server{Addr: *f.coap, ImageAddr: *f.images, DTLSAddr: *f.coaps, HTTPAddr: *f.http, PublicHost: *f.host, Logger: log,
		MaxLifetime: *f.maxLifetime, MaxRegistrations: *f.maxRegs,
		QueueWindow: *f.queueWindow, MaxQueued: *f.queueMax, QueueExpiry: *f.queueExpiry}
	if *f.queueWindow < 0 || *f.queueExpiry < 0 || *f.queueMax < 1 {
		fmt.Fprintln(stderr, "lwm2m server: -queue-window and -queue-expiry must not be negative, -queue-max at least 1")
		return 2
	}
	if (*f.coaps == "") != (*f.pskFile == "") {
		fmt.Fprintln(stderr, "lwm2m server: -coaps and -psk-file go together")
		return 2
	}
	if *f.tokenFile == "" {
		fmt.Fprintln(stderr, "lwm2m server: no configuration directory for the API token: give -token-file FILE")
		return 2
	}
	if *f.maxLifetime < time.Second || *f.maxRegs < 1 {
		fmt.Fprintln(stderr, "lwm2m server: -max-lifetime must be at least 1s and -max-registrations at least 1")
		return 2
	}
	if *f.maxPackage <= 0 {
		fmt.Fprintln(stderr, "lwm2m server: -max-package-size must be positive")
		return 2
	}
	if *f.deviceTimeout <= 0 {
		fmt.Fprintln(stderr, "lwm2m server: -campaign-device-timeout must be positive")
		return 2
	}
	if msg := f.bootstrap.usage(); msg != "" {
		fmt.Fprintln(stderr, "lwm2m server:", msg)
		return 2
	}
	token, err := httpapi.LoadOrCreateToken(*f.tokenFile)
	if err != nil {
		fmt.Fprintln(stderr, "lwm2m server: -token-file:", err)
		return 1
	}
	if *f.pskFile != "" {
		psks, err := server.LoadPSKFile(*f.pskFile)
		if err != nil {
			fmt.Fprintln(stderr, "lwm2m server:", err)
			return 1
		}
		if len(psks) == 0 {
			fmt.Fprintf(stderr, "lwm2m server: %s holds no credentials\n", *f.pskFile)
			return 1
		}
		s.PSKs = psks
	}
	// The console's device list shows each device's firmware version and
	// /5 state: read them when a device registers (set before Listen, which
	// starts taking registrations).
	s.Inventory = *f.console
	var st *server.BoltStore
	if *f.db != "" {
		st, err = server.OpenBoltStore(*f.db)
		if err != nil {
			fmt.Fprintln(stderr, "lwm2m server:", err)
			return 1
		}
		// Close leaves the store open: it is ours to close.
		defer st.Close()
		s.Store = st
	}
	if err := s.Listen(); err != nil {
		fmt.Fprintln(stderr, "lwm2m server:", err)
		return 1
	}
	bs, stopBS, err := f.bootstrap.start(ctx, st, log)
	if err != nil {
		s.Close()
		fmt.Fprintln(stderr, "lwm2m server:", err)
		return 1
	}
	defer stopBS()
	l, err := net.Listen("tcp", strings.TrimPrefix(*f.api, "http://"))
	if err != nil {
		s.Close()
		fmt.Fprintln(stderr, "lwm2m server: -api:", err)
		return 1
	}
	eng, stopEngine, err := srvCampaignEngine(ctx, s, f, log)
	if err != nil {
		s.Close()
		l.Close()
		fmt.Fprintln(stderr, "lwm2m server:", err)
		return 1
	}
	defer stopEngine()
	apiCfg := httpapi.Config{Token: token, MaxPackageSize: *f.maxPackage, Routes: eng.Routes()}
	if bs != nil {
		apiCfg.Bootstrap = bs.HistoryHandler()
	}
	if *f.console {
		apiCfg.Console = console.Handler()
		// The event stream tells browsers to refetch a campaign that changed.
		eng.Subscribe(ctx, func(id string) { s.PublishEvent(server.Event{Kind: "campaign", ID: id}) })
	}
	api := httpapi.Handler(s, apiCfg)
	hs := apiHTTPServer(api)
	go hs.Serve(l)
	log.Info("api listening", "addr", "http://"+l.Addr().String(), "token_file", *f.tokenFile)
	if *f.console {
		log.Info("web console", "url", "http://"+l.Addr().String()+"/", "sign_in", "paste the token from the token file")
	}
	if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
		log.Warn("the API is reachable beyond this host over plain HTTP: its token crosses the network in clear; prefer -api 127.0.0.1:PORT", "addr", l.Addr().String())
	}
	// One line that scripts (and tests) can parse to learn the bound ports.
	ready := fmt.Sprintf("listening coap=%s api=http://%s images=%s", s.LocalAddr(), l.Addr(), s.ImageLocalAddr())
	if a := s.DTLSLocalAddr(); a != nil {
		ready += " coaps=" + a.String()
	}
	if a := s.HTTPLocalAddr(); a != nil {
		ready += " http=http://" + a.String()
	}
	ready += srvBootstrapReady(bs)
	fmt.Fprintln(stdout, ready)
	err = s.Serve(ctx)
	hs.Close()
	if err != nil {
		fmt.Fprintln(stderr, "lwm2m server:", err)
		return 1
	}
	return 0
}

// apiHTTPServer serves the API with deadlines for what a peer may leave
// hanging: the headers of a request, and the next request on a kept-alive
// connection (without IdleTimeout net/http keeps an idle one forever).
// Bodies have theirs from the API handler; answers have none, since the
// event stream and observe last as long as the client wants.
func apiHTTPServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: server.IdleTimeout}
}

// srvParse parses flags that may come before or after positional
// arguments, so "read /3/0 -ep dev" works like "read -ep dev /3/0".
func srvParse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

type srvUsageError struct{ msg string }

func (e srvUsageError) Error() string { return e.msg }

// srvAPIURL accepts the API as a URL or as the host:port the server's
// -api flag takes.
func srvAPIURL(s string) string {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return strings.TrimRight(s, "/")
}

func srvRunSub(ctx context.Context, name string, sub srvSub, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m server "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv(srvAPIEnv)
	if def == "" {
		def = "http://" + srvDefaultAPIAddr
	}
	api := fs.String("api", def, "`URL` of the running server's API ($"+srvAPIEnv+")")
	tokenFile := fs.String("token-file", srvDefaultTokenFile(), "`file` with the server's API token ($"+srvTokenEnv+")")
	if name != "list" && name != "update" && name != "values" && name != "bootstrap-history" && !strings.HasPrefix(name, "campaign ") {
		fs.String("ep", "", "device `endpoint` name")
	}
	if name == "update" {
		fs.String("ep", "", "update the device with this `endpoint` name")
	}
	if name == "values" {
		fs.String("ep", "", "device `endpoint` name (or give it as the argument)")
	}
	if sub.flags != nil {
		sub.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: lwm2m server %s %s\n\n%s.\n\nFlags:\n", name, sub.usage, sub.summary)
		fs.PrintDefaults()
	}
	usage := fs.Usage
	fs.Usage = func() {}
	pos, err := srvParse(fs, args)
	fs.Usage = usage
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		fs.Usage()
		return 2
	}
	c := &srvClient{api: srvAPIURL(*api), tokenFile: *tokenFile}
	if fl := fs.Lookup("timeout"); fl != nil && name != "update" {
		c.timeout = fl.Value.(flag.Getter).Get().(time.Duration)
		if c.timeout <= 0 {
			err = srvUsageError{"-timeout must be positive"}
		}
	}
	if err == nil {
		err = sub.run(ctx, c, fs, pos, stdout)
	}
	var ue srvUsageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "lwm2m server %s: %s\n", name, termSafe(ue.msg))
		fs.Usage()
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "lwm2m server %s: %s\n", name, termSafe(err.Error()))
		return 1
	}
	return 0
}

func srvFlag(fs *flag.FlagSet, name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return ""
	}
	return f.Value.String()
}

// srvTarget returns -ep and the positional arguments, the first a path,
// checked here: a bad one is a usage error, not the server's.
func srvTarget(fs *flag.FlagSet, pos []string, min, max int) (ep string, rest []string, err error) {
	ep = srvFlag(fs, "ep")
	if ep == "" {
		return "", nil, srvUsageError{"-ep is required"}
	}
	if len(pos) < min || len(pos) > max {
		return "", nil, srvUsageError{"wrong number of arguments"}
	}
	if len(pos) > 0 {
		if _, err := model.ParsePath(pos[0]); err != nil {
			return "", nil, srvUsageError{fmt.Sprintf("bad path %q: %v", pos[0], err)}
		}
	}
	if fl := fs.Lookup("format"); fl != nil {
		if _, err := server.ParseFormat(fl.Value.String()); err != nil {
			return "", nil, srvUsageError{fmt.Sprintf("bad -format %q: want text, tlv, senml-json, senml-cbor, opaque, link or a number", fl.Value.String())}
		}
	}
	return ep, pos, nil
}

// do sends one API request with the token and returns the response; an
// answer other than 2xx is an error.
func (c *srvClient) do(ctx context.Context, method, u, ctype string, body io.Reader, size int64) (*http.Response, error) {
	if c.token == "" {
		if c.tokenFile == "" {
			return nil, errors.New("no configuration directory for the API token: give -token-file FILE")
		}
		tok, err := httpapi.ReadToken(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("-token-file: %w", err)
		}
		c.token = tok
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
		req.ContentLength = size
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the server's API at %s (is lwm2m server running? -api): %w", c.api, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, c.apiError(resp)
	}
	return resp, nil
}

// call does one request with a JSON body (nil for none) and decodes a JSON
// answer into out. The device's timeout goes in the query.
func (c *srvClient) call(ctx context.Context, method, u string, body any, out any) error {
	if c.timeout > 0 {
		// The server's own timeout answers first; this one is a safety net.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout+10*time.Second)
		defer cancel()
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "timeout=" + url.QueryEscape(c.timeout.String())
	}
	var r io.Reader
	var n int64
	if body != nil {
		b, _ := json.Marshal(body)
		r, n = bytes.NewReader(b), int64(len(b))
	}
	resp, err := c.do(ctx, method, u, "application/json", r, n)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func (c *srvClient) apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e map[string]string
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e["error"] != "" {
		msg = e["error"]
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("the server at %s refused the token in %s: is it that server's token file? (-token-file)", c.api, c.tokenFile)
	case http.StatusForbidden:
		return fmt.Errorf("the server at %s refused the request: %s", c.api, msg)
	}
	return errors.New(msg)
}

func srvDevURL(api, ep, op string, q url.Values) string {
	u := api + "/api/devices/" + url.PathEscape(ep) + "/" + op
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func srvList(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) != 0 {
		return srvUsageError{"list takes no arguments"}
	}
	var regs []httpapi.Device
	if err := c.call(ctx, "GET", c.api+"/api/devices", nil, &regs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tID\tADDRESS\tSECURITY\tLWM2M\tBINDING\tLIFETIME\tUPDATED\tQUEUE\tLAST SEEN\tOBJECTS")
	for _, r := range regs {
		sec := "none"
		if r.Secure {
			sec = "psk:" + termSafe(r.PSKIdentity)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%ds\t%s\t%s\t%s\t%s\n", termSafe(r.Endpoint), termSafe(r.ID), termSafe(r.Addr), sec,
			termSafe(r.Version), termSafe(r.Binding), r.Lifetime, r.Updated.Format(time.RFC3339), srvQueueState(r),
			srvSeen(r.LastSeen), termSafe(r.Links))
	}
	return tw.Flush()
}

// srvQueueState is "awake" or "asleep" (with the operations waiting) for a
// queue-mode device, "-" for one that is always reachable.
func srvQueueState(d httpapi.Device) string {
	switch {
	case d.Awake == nil:
		return "-"
	case *d.Awake:
		return "awake"
	case d.Queued > 0:
		return fmt.Sprintf("asleep(%d queued)", d.Queued)
	}
	return "asleep"
}

func srvSeen(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// srvValues prints the last value the device sent for each resource.
func srvValues(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep := srvFlag(fs, "ep")
	switch {
	case ep == "" && len(pos) == 1:
		ep = pos[0]
	case ep == "" || len(pos) != 0:
		return srvUsageError{"give the endpoint, as -ep EP or as the one argument"}
	}
	var vals []httpapi.Value
	if err := c.call(ctx, "GET", srvDevURL(c.api, ep, "values", nil), nil, &vals); err != nil {
		return err
	}
	if len(vals) == 0 {
		fmt.Fprintf(stdout, "%s has sent no values\n", termSafe(ep))
		return nil
	}
	for _, v := range vals {
		fmt.Fprintf(stdout, "%s = %s (%s) at %s\n", termSafe(v.Path), termSafe(v.Value), termSafe(v.Type), v.Time.Format(time.RFC3339))
	}
	return nil
}

// srvPrintContent prints decoded records, or a link payload; a payload
// that could not be decoded is an error, never raw bytes on the terminal.
func srvPrintContent(w io.Writer, c httpapi.Content) error {
	if c.Error != "" {
		return fmt.Errorf("cannot decode the device's answer (content format %d): %s", c.Format, c.Error)
	}
	for _, r := range c.Records {
		fmt.Fprintf(w, "%s = %s (%s)\n", termSafe(r.Path), termSafe(r.Value), termSafe(r.Type))
	}
	if len(c.Records) == 0 && c.Format == uint16(content.LinkFormat) {
		b, _ := base64.StdEncoding.DecodeString(c.Payload)
		fmt.Fprintln(w, termSafe(string(b)))
	}
	return nil
}

func srvRead(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	var cont httpapi.Content
	q := url.Values{"path": {pos[0]}, "format": {srvFlag(fs, "format")}}
	if err := c.call(ctx, "GET", srvDevURL(c.api, ep, "read", q), nil, &cont); err != nil {
		return err
	}
	return srvPrintContent(stdout, cont)
}

func srvWrite(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 2, 2)
	if err != nil {
		return err
	}
	return c.call(ctx, "POST", srvDevURL(c.api, ep, "write", nil), httpapi.WriteRequest{Path: pos[0], Value: &pos[1], Replace: true}, nil)
}

func srvExec(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 2)
	if err != nil {
		return err
	}
	body := map[string]string{"path": pos[0]}
	if len(pos) == 2 {
		body["args"] = pos[1]
	}
	return c.call(ctx, "POST", srvDevURL(c.api, ep, "execute", nil), body, nil)
}

func srvDelete(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	return c.call(ctx, "POST", srvDevURL(c.api, ep, "delete", nil), map[string]string{"path": pos[0]}, nil)
}

func srvWriteAttr(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 2, 2)
	if err != nil {
		return err
	}
	return c.call(ctx, "POST", srvDevURL(c.api, ep, "attributes", nil), map[string]string{"path": pos[0], "query": pos[1]}, nil)
}

func srvDiscover(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	var links []string
	if err := c.call(ctx, "GET", srvDevURL(c.api, ep, "discover", url.Values{"path": {pos[0]}}), nil, &links); err != nil {
		return err
	}
	for _, l := range links {
		fmt.Fprintln(stdout, termSafe(l))
	}
	return nil
}

func srvObserve(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	n := fs.Lookup("n").Value.(flag.Getter).Get().(int)
	q := url.Values{"path": {pos[0]}, "format": {srvFlag(fs, "format")}}
	resp, err := c.do(ctx, "GET", srvDevURL(c.api, ep, "observe", q), "", nil, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 8<<20)
	seen := 0
	for sc.Scan() {
		var cont httpapi.Content
		if err := json.Unmarshal(sc.Bytes(), &cont); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s ", time.Now().Format("15:04:05"))
		if err := srvPrintContent(stdout, cont); err != nil {
			return err
		}
		seen++
		if n > 0 && seen >= n {
			return nil
		}
	}
	if ctx.Err() != nil { // Ctrl-C is the normal way to stop
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("observation ended")
}

// srvOpenPackage opens a package to upload: a regular file that is not
// empty. A device such as /dev/zero or a FIFO is refused before it is
// opened (opening a FIFO would wait for a writer).
func srvOpenPackage(name string) (*os.File, int64, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("-package %s is not a regular file", name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, err
	}
	if st, err = f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("-package %s is not a regular file", name)
	}
	if st.Size() == 0 {
		f.Close()
		return nil, 0, fmt.Errorf("-package %s is empty", name)
	}
	return f, st.Size(), nil
}

func srvUpdate(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) != 0 {
		return srvUsageError{"update takes no arguments"}
	}
	ep, match, pkg, method := srvFlag(fs, "ep"), srvFlag(fs, "match"), srvFlag(fs, "package"), srvFlag(fs, "method")
	timeout := fs.Lookup("timeout").Value.(flag.Getter).Get().(time.Duration)
	if (ep == "") == (match == "") {
		return srvUsageError{"give exactly one of -ep and -match"}
	}
	if pkg == "" {
		return srvUsageError{"-package is required"}
	}
	if _, err := server.ParseMethod(method); err != nil {
		return srvUsageError{fmt.Sprintf("bad -method %q: want pull, pull-http or push", method)}
	}
	if timeout <= 0 {
		return srvUsageError{"-timeout must be positive"}
	}
	f, size, err := srvOpenPackage(pkg)
	if err != nil {
		return err
	}
	defer f.Close()
	q := url.Values{"method": {method}, "timeout": {timeout.String()}}
	if ep != "" {
		q.Set("ep", ep)
	} else {
		q.Set("match", match)
	}
	// The server ends the update at its timeout; this one is a safety net.
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	resp, err := c.do(ctx, "POST", c.api+"/api/update?"+q.Encode(), "application/octet-stream", io.NewSectionReader(f, 0, size), size)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return srvShowUpdate(resp.Body, stdout)
}

// srvShowUpdate prints an /api/update stream: progress, then each
// device's outcome.
func srvShowUpdate(body io.Reader, stdout io.Writer) error {
	// A json.Decoder, not a line scanner: the results line of a large
	// fleet is longer than any fixed line buffer.
	dec := json.NewDecoder(body)
	show := srvProgressPrinter(stdout)
	for {
		var line httpapi.UpdateLine
		if err := dec.Decode(&line); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		if p := line.Progress; p != nil {
			show(*p)
			continue
		}
		if line.Results != nil {
			failed := 0
			for _, r := range line.Results {
				if r.Error != "" {
					failed++
					fmt.Fprintf(stdout, "%s: FAILED: %s\n", termSafe(r.Endpoint), termSafe(r.Error))
				} else {
					fmt.Fprintf(stdout, "%s: %s\n", termSafe(r.Endpoint), termSafe(r.ResultName))
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d devices failed", failed, len(line.Results))
			}
			return nil
		}
	}
	return errors.New("the server ended the update without a result")
}

// srvProgressPrinter returns a function that prints one progress line
// per state change and every 10% of delivered bytes.
func srvProgressPrinter(stdout io.Writer) func(server.Progress) {
	lastPct := map[string]int64{}
	return func(p server.Progress) {
		ep := termSafe(p.Endpoint)
		switch p.Phase {
		case "deliver":
			pct := p.Sent * 100 / max(p.Total, 1)
			if pct/10 != lastPct[p.Endpoint]/10 || p.Sent == p.Total {
				fmt.Fprintf(stdout, "%s: sent %d/%d bytes (%d%%)\n", ep, p.Sent, p.Total, pct)
			}
			lastPct[p.Endpoint] = pct
		case "uri":
			fmt.Fprintf(stdout, "%s: package URI %s\n", ep, termSafe(p.URI))
		case "state":
			fmt.Fprintf(stdout, "%s: state %s, result %s\n", ep, p.State, termSafe(p.Result.String()))
		case "execute":
			fmt.Fprintf(stdout, "%s: executing Update\n", ep)
		case "registered":
			fmt.Fprintf(stdout, "%s: registered again\n", ep)
		}
	}
}

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
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
)

// srvDefaultAPI is where one-shot commands find a running server unless
// -api or $LWM2M_SERVER_API says otherwise.
const (
	srvDefaultAPIAddr = "127.0.0.1:5780"
	srvAPIEnv         = "LWM2M_SERVER_API"
)

type srvSub struct {
	summary, usage string
	run            func(ctx context.Context, api string, fs *flag.FlagSet, args []string, stdout io.Writer) error
	flags          func(fs *flag.FlagSet)
}

var srvSubs map[string]srvSub

func init() {
	srvSubs = map[string]srvSub{
		"list":       {"list registered devices", "", srvList, nil},
		"read":       {"read a path", "-ep EP PATH", srvRead, srvFormatFlag},
		"write":      {"write a value (plain text) to a resource", "-ep EP PATH VALUE", srvWrite, nil},
		"exec":       {"execute a resource", "-ep EP PATH [ARGS]", srvExec, nil},
		"discover":   {"discover a path", "-ep EP PATH", srvDiscover, nil},
		"write-attr": {"write notification attributes", "-ep EP PATH QUERY (e.g. pmin=1&pmax=60)", srvWriteAttr, nil},
		"delete":     {"delete an object instance", "-ep EP PATH", srvDelete, nil},
		"observe": {"print notifications until Ctrl-C or -n", "-ep EP [-n N] PATH", srvObserve, func(fs *flag.FlagSet) {
			srvFormatFlag(fs)
			fs.Int("n", 0, "stop after `N` notifications (0: never)")
		}},
		"update": {"update firmware and wait for the result", "-ep EP|-match GLOB -package FILE [-method pull|pull-http|push] [-timeout D]", srvUpdate, func(fs *flag.FlagSet) {
			fs.String("match", "", "update every endpoint matching `GLOB`")
			fs.String("package", "", "firmware package `FILE` (read by the server)")
			fs.String("method", "pull", "delivery `method`: pull (coap), pull-http or push")
			fs.Duration("timeout", 10*time.Minute, "give up after `D`")
		}},
	}
}

func srvFormatFlag(fs *flag.FlagSet) {
	fs.String("format", "", "content `format` to ask for: text, tlv, senml-json, senml-cbor, opaque or a number")
}

func srvUsage(w io.Writer) {
	fmt.Fprintln(w, `usage: lwm2m server [-coap ADDR] [-coaps ADDR -psk-file FILE] [-api ADDR] [-http ADDR] [-db FILE] [-public-host HOST]
       lwm2m server COMMAND [-api URL] [flags] ARGS

Without a command, runs the LwM2M server. Commands talk to a running server
through its HTTP API (-api, default $`+srvAPIEnv+` or http://`+srvDefaultAPIAddr+`):`)
	for _, n := range []string{"list", "read", "write", "exec", "discover", "write-attr", "delete", "observe", "update"} {
		fmt.Fprintf(w, "  %-10s %s\n", n, srvSubs[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'lwm2m server COMMAND -h' for a command's flags.")
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, ok := srvSubs[args[0]]
		if !ok {
			fmt.Fprintf(stderr, "lwm2m server: unknown command %q\n", args[0])
			srvUsage(stderr)
			return 2
		}
		return srvRunSub(ctx, args[0], sub, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("lwm2m server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	coapAddr := fs.String("coap", server.DefaultAddr, "UDP `address` for CoAP (registration and image downloads)")
	apiAddr := fs.String("api", srvDefaultAPIAddr, "TCP `address` of the HTTP/JSON command API (keep it on loopback)")
	coapsAddr := fs.String("coaps", "", "UDP `address` for CoAP over DTLS with PSK (needs -psk-file); e.g. "+server.DefaultDTLSAddr)
	pskFile := fs.String("psk-file", "", "DTLS credentials `file`: one identity:hexkey per line, # comments")
	httpAddr := fs.String("http", "", "TCP `address` to serve firmware images over HTTP (for -method pull-http)")
	imageAddr := fs.String("coap-images", "", "UDP `address` that serves images over CoAP (default: the -coap host, a free port)")
	db := fs.String("db", "", "bbolt `file` that keeps registrations across restarts (empty: in memory)")
	host := fs.String("public-host", "", "`host` that devices reach this server at, for package URIs")
	verbose := fs.Bool("v", false, "log debug messages")
	maxLifetime := fs.Duration("max-lifetime", server.DefaultMaxLifetime, "cap on a registration's `lifetime`; a longer one is clamped")
	maxRegs := fs.Int("max-registrations", server.DefaultMaxRegistrations, "cap on registered endpoints; new ones beyond get 5.03")
	fs.Usage = func() {
		srvUsage(fs.Output())
		fmt.Fprintln(fs.Output(), "\nServer flags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lwm2m server: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *maxLifetime < time.Second || *maxRegs < 1 {
		fmt.Fprintln(stderr, "lwm2m server: -max-lifetime must be at least 1s and -max-registrations at least 1")
		return 2
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s := &server.Server{Addr: *coapAddr, ImageAddr: *imageAddr, DTLSAddr: *coapsAddr, HTTPAddr: *httpAddr, PublicHost: *host, Logger: log,
		MaxLifetime: *maxLifetime, MaxRegistrations: *maxRegs}
	if (*coapsAddr == "") != (*pskFile == "") {
		fmt.Fprintln(stderr, "lwm2m server: -coaps and -psk-file go together")
		return 2
	}
	if *pskFile != "" {
		psks, err := server.LoadPSKFile(*pskFile)
		if err != nil {
			fmt.Fprintln(stderr, "lwm2m server:", err)
			return 1
		}
		if len(psks) == 0 {
			fmt.Fprintf(stderr, "lwm2m server: %s holds no credentials\n", *pskFile)
			return 1
		}
		s.PSKs = psks
	}
	if *db != "" {
		st, err := server.OpenBoltStore(*db)
		if err != nil {
			fmt.Fprintln(stderr, "lwm2m server:", err)
			return 1
		}
		s.Store = st
	}
	if err := s.Listen(); err != nil {
		fmt.Fprintln(stderr, "lwm2m server:", err)
		return 1
	}
	l, err := net.Listen("tcp", *apiAddr)
	if err != nil {
		s.Close()
		fmt.Fprintln(stderr, "lwm2m server: api:", err)
		return 1
	}
	hs := &http.Server{Handler: s.APIHandler(), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	log.Info("api listening", "addr", "http://"+l.Addr().String())
	// One line that scripts (and tests) can parse to learn the bound ports.
	ready := fmt.Sprintf("listening coap=%s api=http://%s images=%s", s.LocalAddr(), l.Addr(), s.ImageLocalAddr())
	if a := s.DTLSLocalAddr(); a != nil {
		ready += " coaps=" + a.String()
	}
	if a := s.HTTPLocalAddr(); a != nil {
		ready += " http=http://" + a.String()
	}
	fmt.Fprintln(stdout, ready)
	err = s.Serve(ctx)
	hs.Close()
	if err != nil {
		fmt.Fprintln(stderr, "lwm2m server:", err)
		return 1
	}
	return 0
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

func srvRunSub(ctx context.Context, name string, sub srvSub, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m server "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv(srvAPIEnv)
	if def == "" {
		def = "http://" + srvDefaultAPIAddr
	}
	api := fs.String("api", def, "`URL` of the running server's API ($"+srvAPIEnv+")")
	if name != "list" {
		fs.String("ep", "", "device `endpoint` name")
	}
	if sub.flags != nil {
		sub.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: lwm2m server %s %s\n\n%s.\n\nFlags:\n", name, sub.usage, sub.summary)
		fs.PrintDefaults()
	}
	pos, err := srvParse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	err = sub.run(ctx, strings.TrimRight(*api, "/"), fs, pos, stdout)
	var ue srvUsageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "lwm2m server %s: %s\n", name, ue.msg)
		fs.Usage()
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "lwm2m server %s: %v\n", name, err)
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

// srvTarget returns -ep and the one path argument, plus extra arguments.
func srvTarget(fs *flag.FlagSet, pos []string, min, max int) (ep string, rest []string, err error) {
	ep = srvFlag(fs, "ep")
	if ep == "" {
		return "", nil, srvUsageError{"-ep is required"}
	}
	if len(pos) < min || len(pos) > max {
		return "", nil, srvUsageError{"wrong number of arguments"}
	}
	return ep, pos, nil
}

// srvCall does one API request and decodes a JSON answer into out.
func srvCall(ctx context.Context, method, u string, body any, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is the server running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return srvAPIError(resp)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

func srvAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e map[string]string
	if json.Unmarshal(b, &e) == nil && e["error"] != "" {
		return errors.New(e["error"])
	}
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
}

func srvDevURL(api, ep, op string, q url.Values) string {
	u := api + "/api/devices/" + url.PathEscape(ep) + "/" + op
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func srvList(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) != 0 {
		return srvUsageError{"list takes no arguments"}
	}
	var regs []server.Registration
	if err := srvCall(ctx, "GET", api+"/api/devices", nil, &regs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tID\tADDRESS\tSECURITY\tLWM2M\tBINDING\tLIFETIME\tUPDATED\tOBJECTS")
	for _, r := range regs {
		sec := "none"
		if r.Secure {
			sec = "psk:" + r.PSKIdentity
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%ds\t%s\t%s\n", r.Endpoint, r.ID, r.Addr, sec, r.Version, r.Binding, r.Lifetime, r.Updated.Format(time.RFC3339), r.Links)
	}
	return tw.Flush()
}

func srvPrintContent(w io.Writer, c server.APIContent) {
	if len(c.Records) > 0 {
		for _, r := range c.Records {
			fmt.Fprintf(w, "%s = %s (%s)\n", r.Path, r.Value, r.Type)
		}
		return
	}
	b, _ := base64.StdEncoding.DecodeString(c.Payload)
	fmt.Fprintf(w, "%s\n", b)
}

func srvRead(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	var c server.APIContent
	q := url.Values{"path": {pos[0]}, "format": {srvFlag(fs, "format")}}
	if err := srvCall(ctx, "GET", srvDevURL(api, ep, "read", q), nil, &c); err != nil {
		return err
	}
	srvPrintContent(stdout, c)
	return nil
}

func srvWrite(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 2, 2)
	if err != nil {
		return err
	}
	return srvCall(ctx, "POST", srvDevURL(api, ep, "write", nil), server.APIWrite{Path: pos[0], Value: &pos[1], Replace: true}, nil)
}

func srvExec(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 2)
	if err != nil {
		return err
	}
	body := map[string]string{"path": pos[0]}
	if len(pos) == 2 {
		body["args"] = pos[1]
	}
	return srvCall(ctx, "POST", srvDevURL(api, ep, "execute", nil), body, nil)
}

func srvDelete(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	return srvCall(ctx, "POST", srvDevURL(api, ep, "delete", nil), map[string]string{"path": pos[0]}, nil)
}

func srvWriteAttr(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 2, 2)
	if err != nil {
		return err
	}
	return srvCall(ctx, "POST", srvDevURL(api, ep, "attributes", nil), map[string]string{"path": pos[0], "query": pos[1]}, nil)
}

func srvDiscover(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	var links []string
	if err := srvCall(ctx, "GET", srvDevURL(api, ep, "discover", url.Values{"path": {pos[0]}}), nil, &links); err != nil {
		return err
	}
	for _, l := range links {
		fmt.Fprintln(stdout, l)
	}
	return nil
}

func srvObserve(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	ep, pos, err := srvTarget(fs, pos, 1, 1)
	if err != nil {
		return err
	}
	n := fs.Lookup("n").Value.(flag.Getter).Get().(int)
	q := url.Values{"path": {pos[0]}, "format": {srvFlag(fs, "format")}}
	req, err := http.NewRequestWithContext(ctx, "GET", srvDevURL(api, ep, "observe", q), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("is the server running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return srvAPIError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 8<<20)
	seen := 0
	for sc.Scan() {
		var c server.APIContent
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s ", time.Now().Format("15:04:05"))
		srvPrintContent(stdout, c)
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

func srvUpdate(ctx context.Context, api string, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) != 0 {
		return srvUsageError{"update takes no arguments"}
	}
	req := server.APIUpdate{
		Endpoint: srvFlag(fs, "ep"),
		Match:    srvFlag(fs, "match"),
		Package:  srvFlag(fs, "package"),
		Method:   srvFlag(fs, "method"),
		Timeout:  srvFlag(fs, "timeout"),
	}
	if (req.Endpoint == "") == (req.Match == "") {
		return srvUsageError{"give exactly one of -ep and -match"}
	}
	if req.Package == "" {
		return srvUsageError{"-package is required"}
	}
	if _, err := server.ParseMethod(req.Method); err != nil {
		return srvUsageError{err.Error()}
	}
	// The server opens the file itself; it runs on this host.
	abs, err := filepath.Abs(req.Package)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err != nil {
		return err
	}
	req.Package = abs
	b, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, "POST", api+"/api/update", bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return fmt.Errorf("is the server running? %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return srvAPIError(resp)
	}
	// A json.Decoder, not a line scanner: the results line of a large
	// fleet is longer than any fixed line buffer.
	dec := json.NewDecoder(resp.Body)
	lastPct := map[string]int64{}
	for {
		var line server.APIUpdateLine
		if err := dec.Decode(&line); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		if p := line.Progress; p != nil {
			switch p.Phase {
			case "deliver":
				pct := p.Sent * 100 / max(p.Total, 1)
				if pct/10 != lastPct[p.Endpoint]/10 || p.Sent == p.Total {
					fmt.Fprintf(stdout, "%s: sent %d/%d bytes (%d%%)\n", p.Endpoint, p.Sent, p.Total, pct)
				}
				lastPct[p.Endpoint] = pct
			case "uri":
				fmt.Fprintf(stdout, "%s: package URI %s\n", p.Endpoint, p.URI)
			case "state":
				fmt.Fprintf(stdout, "%s: state %s, result %s\n", p.Endpoint, server.StateName(p.State), p.Result)
			case "execute":
				fmt.Fprintf(stdout, "%s: executing Update\n", p.Endpoint)
			case "registered":
				fmt.Fprintf(stdout, "%s: registered again\n", p.Endpoint)
			}
			continue
		}
		if line.Results != nil {
			failed := 0
			for _, r := range line.Results {
				if r.Error != "" {
					failed++
					fmt.Fprintf(stdout, "%s: FAILED: %s\n", r.Endpoint, r.Error)
				} else {
					fmt.Fprintf(stdout, "%s: %s\n", r.Endpoint, r.ResultName)
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

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
)

// campaignActions are the subcommands of "lwm2m server campaign", in the
// order of the usage.
var campaignActions = []struct {
	name, args, summary string
	flags               func(fs *flag.FlagSet)
	run                 func(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error
}{
	{"create", "-name NAME -package ID|FILE [-match GLOB] [flags]", "create a campaign and start it", campaignCreateFlags, campaignCreate},
	{"list", "", "list campaigns", nil, campaignList},
	{"show", "[-devices=false] [-wait] ID", "show a campaign, its waves and devices", func(fs *flag.FlagSet) {
		fs.Bool("devices", true, "list the devices")
		fs.Bool("wait", false, "wait until the campaign is done, paused or aborted; exit 1 unless it is done without a failed or expired device")
	}, campaignShow},
	{"pause", "ID", "stop starting devices (updates under way go on)", nil, campaignAction("pause")},
	{"resume", "ID", "resume a paused campaign", nil, campaignAction("resume")},
	{"abort", "ID", "end a campaign: devices not yet started are skipped", nil, campaignAction("abort")},
}

func campaignUsage(w io.Writer) {
	fmt.Fprintln(w, `usage: lwm2m server campaign ACTION [-api URL] [-token-file FILE] [flags] ARGS

Update campaigns on a running server (docs/SERVER.md, "Campaigns"):`)
	for _, a := range campaignActions {
		fmt.Fprintf(w, "  %-7s %s\n", a.name, a.summary)
	}
	fmt.Fprintln(w, "\nRun 'lwm2m server campaign ACTION -h' for an action's flags.\nExit status: 0 done, 1 failed (the server refused, or show -wait saw failures), 2 usage.")
}

func campaignCreateFlags(fs *flag.FlagSet) {
	fs.String("name", "", "campaign `name` (required)")
	fs.String("package", "", "package `ID` on the server, or a package FILE to upload first (required)")
	fs.String("match", "*", "endpoints to update: a `GLOB` over registered endpoint names")
	fs.String("firmware-version", "", "update only devices whose /3/0/3 is `VERSION`")
	fs.String("resource", "", "update only devices where `PATH=VALUE`, e.g. /3/0/1=model-x")
	fs.String("method", campaign.MethodPullCoAP, "delivery `method`: pull-coap, pull-http or push")
	fs.Int("canary", 0, "`N` devices updated first, in a wave of their own")
	fs.Int("wave-size", 0, "`N` devices in each later wave (0: -wave-percent, or one wave)")
	fs.Float64("wave-percent", 0, "each later wave as `P` percent of the devices")
	fs.Int("concurrency", campaign.DefaultConcurrency, "at most `N` devices updating at once")
	fs.Float64("failure-threshold", campaign.DefaultFailureThreshold, "pause when more than `P` percent of a wave failed (0: at the first failure, 100: never)")
	fs.String("deadline", "24h", "no device starts after `T`: an RFC 3339 time or a duration from now")
}

// srvCampaign runs "lwm2m server campaign ACTION"; args may start with
// the global flags given before "campaign".
func srvCampaign(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var pre []string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && strings.Contains(args[0], "=") {
		pre, args = append(pre, args[0]), args[1:]
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		if len(args) == 0 {
			campaignUsage(stderr)
			return 2
		}
		campaignUsage(stdout)
		return 0
	}
	name := args[0]
	for _, a := range campaignActions {
		if a.name != name {
			continue
		}
		sub := srvSub{summary: a.summary, usage: a.args, run: a.run, flags: a.flags}
		return srvRunSub(ctx, "campaign "+name, sub, append(pre, args[1:]...), stdout, stderr)
	}
	fmt.Fprintf(stderr, "lwm2m server campaign: unknown action %q\n", termSafe(name))
	campaignUsage(stderr)
	return 2
}

func campaignCreate(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) != 0 {
		return srvUsageError{"create takes flags only"}
	}
	get := func(n string) string { return srvFlag(fs, n) }
	spec := campaign.Spec{Name: get("name"), Package: get("package"), Method: get("method"),
		Target: campaign.Target{Endpoints: get("match"), FirmwareVersion: get("firmware-version")}}
	if spec.Name == "" || spec.Package == "" {
		return srvUsageError{"-name and -package are required"}
	}
	// A misspelt method is a usage error, found before -package FILE is
	// uploaded: otherwise each attempt would leave a package behind.
	switch spec.Method {
	case campaign.MethodPullCoAP, campaign.MethodPullCoAPS, campaign.MethodPullHTTP, campaign.MethodPullHTTPS, campaign.MethodPush:
	default:
		return srvUsageError{fmt.Sprintf("-method %q: want pull-coap, pull-http or push", spec.Method)}
	}
	if r := get("resource"); r != "" {
		p, v, ok := strings.Cut(r, "=")
		if !ok {
			return srvUsageError{"-resource wants PATH=VALUE"}
		}
		spec.Target.Resource = &campaign.ResourceMatch{Path: p, Equals: v}
	}
	var err error
	num := func(n string) int {
		v, e := strconv.Atoi(get(n))
		err = errors.Join(err, e)
		return v
	}
	fnum := func(n string) float64 {
		v, e := strconv.ParseFloat(get(n), 64)
		err = errors.Join(err, e)
		return v
	}
	threshold := fnum("failure-threshold")
	spec.Rollout = campaign.Rollout{Canary: num("canary"), WaveSize: num("wave-size"), WavePercent: fnum("wave-percent"),
		Concurrency: num("concurrency"), FailureThresholdPercent: &threshold}
	if err != nil {
		return srvUsageError{err.Error()}
	}
	if spec.Rollout.Concurrency < 1 {
		return srvUsageError{"-concurrency must be at least 1"}
	}
	if spec.Deadline, err = parseDeadline(get("deadline"), time.Now()); err != nil {
		return srvUsageError{err.Error()}
	}
	if st, err := os.Stat(spec.Package); err == nil && st.Mode().IsRegular() {
		p, err := campaignUpload(ctx, c, spec.Package)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "package %s uploaded: %s %s, %d bytes, sha256 %s, signature %s\n", p.ID, termSafe(p.Name), termSafe(p.Version), p.Size, p.SHA256, p.Signature)
		spec.Package = p.ID
	}
	var out campaign.Campaign
	if err := c.call(ctx, "POST", c.api+"/api/campaigns", spec, &out); err != nil {
		return err
	}
	printCampaign(stdout, out, false)
	return nil
}

// parseDeadline takes an RFC 3339 time or a duration from now.
func parseDeadline(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, errors.New("-deadline must be in the future")
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad -deadline %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration (24h)", s)
	}
	return t, nil
}

func campaignUpload(ctx context.Context, c *srvClient, file string) (campaign.Package, error) {
	f, size, err := srvOpenPackage(file)
	if err != nil {
		return campaign.Package{}, err
	}
	defer f.Close()
	// A package names itself in its header; another image is named
	// after its file.
	u := c.api + "/api/packages"
	magic := make([]byte, len(fwpkg.Magic))
	if _, err := f.ReadAt(magic, 0); err != nil || string(magic) != fwpkg.Magic {
		u += "?name=" + url.QueryEscape(filepath.Base(file))
	}
	resp, err := c.do(ctx, "POST", u, "application/octet-stream", f, size)
	if err != nil {
		return campaign.Package{}, err
	}
	defer resp.Body.Close()
	var p campaign.Package
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return campaign.Package{}, err
	}
	return p, nil
}

func campaignList(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) != 0 {
		return srvUsageError{"list takes no arguments"}
	}
	var cs []campaign.Campaign
	if err := c.call(ctx, "GET", c.api+"/api/campaigns", nil, &cs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tMETHOD\tDEVICES\tSUCCEEDED\tFAILED\tRUNNING\tPENDING\tDEADLINE")
	for _, x := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", termSafe(x.ID), termSafe(x.Name), x.State, termSafe(x.Method),
			len(x.Devices), x.Counts.Succeeded, x.Counts.Failed, x.Counts.Running, x.Counts.Pending, x.Deadline.Format(time.RFC3339))
	}
	return tw.Flush()
}

// errCampaignFailed makes show -wait exit 1 without a usage message.
var errCampaignFailed = errors.New("the campaign did not end well")

func campaignShow(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) != 1 {
		return srvUsageError{"show takes one campaign ID"}
	}
	wait := srvFlag(fs, "wait") == "true"
	u := c.api + "/api/campaigns/" + url.PathEscape(pos[0])
	var x campaign.Campaign
	for {
		if err := c.call(ctx, "GET", u, nil, &x); err != nil {
			return err
		}
		if !wait || x.State != campaign.StateRunning {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	printCampaign(stdout, x, srvFlag(fs, "devices") == "true")
	if wait && (x.State != campaign.StateDone || x.Counts.Failed+x.Counts.Expired > 0) {
		return fmt.Errorf("%w: %s, %d failed, %d expired", errCampaignFailed, x.State, x.Counts.Failed, x.Counts.Expired)
	}
	return nil
}

func campaignAction(op string) func(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	return func(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
		if len(pos) != 1 {
			return srvUsageError{op + " takes one campaign ID"}
		}
		var x campaign.Campaign
		if err := c.call(ctx, "POST", c.api+"/api/campaigns/"+url.PathEscape(pos[0])+"/"+op, nil, &x); err != nil {
			return err
		}
		printCampaign(stdout, x, false)
		return nil
	}
}

// printCampaign prints a campaign's summary, its waves and, with
// devices, a line per device.
func printCampaign(w io.Writer, x campaign.Campaign, devices bool) {
	fmt.Fprintf(w, "campaign %s %q: %s", termSafe(x.ID), x.Name, x.State)
	if x.PauseReason != "" {
		fmt.Fprintf(w, " (%s)", termSafe(x.PauseReason))
	}
	fmt.Fprintf(w, "\npackage %s, method %s, deadline %s\n", termSafe(x.Package), termSafe(x.Method), x.Deadline.Format(time.RFC3339))
	k := x.Counts
	fmt.Fprintf(w, "%d devices: %d succeeded, %d failed, %d running, %d pending, %d skipped, %d expired\n\n",
		len(x.Devices), k.Succeeded, k.Failed, k.Running, k.Pending, k.Skipped, k.Expired)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tDEVICES\tSUCCEEDED\tFAILED\tSTATE")
	for _, v := range x.Waves {
		name := strconv.Itoa(v.Index)
		if v.Canary {
			name += " (canary)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", name, v.Devices, v.Done, v.Failed, v.State)
	}
	tw.Flush()
	if !devices {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tWAVE\tSTATUS\tPHASE\tSTATE\tRESULT\tBYTES\tERROR")
	for _, d := range x.Devices {
		res := "-"
		if d.Result >= 0 {
			res = fmt.Sprintf("%d %s", d.Result, d.ResultName)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", termSafe(d.Endpoint), d.Wave, d.Status, dash(termSafe(d.Phase)),
			dash(termSafe(d.State)), termSafe(res), d.Bytes, dash(termSafe(d.Error)))
	}
	tw.Flush()
}

// srvCampaignEngine starts the campaign engine of a server about to
// serve; stop ends it and waits for it (and removes a temporary package
// directory).
func srvCampaignEngine(ctx context.Context, s *server.Server, f srvServerFlags, log *slog.Logger) (*campaign.Engine, func(), error) {
	cfg := campaign.Config{Server: s, Dir: *f.packages, MaxPackageSize: *f.maxPackage, Logger: log, DeviceTimeout: *f.deviceTimeout}
	cleanup := func() {}
	switch {
	case cfg.Dir != "":
	case *f.db != "":
		// Beside the store, whose records name them.
		cfg.Dir = *f.db + ".packages"
	default:
		// Registrations, campaigns and package records live in memory:
		// so do the packages, as far as files can.
		dir, err := os.MkdirTemp("", "lwm2m-packages-*")
		if err != nil {
			return nil, nil, fmt.Errorf("package directory: %w", err)
		}
		cfg.Dir = dir
		cleanup = func() { os.RemoveAll(dir) }
	}
	if *f.packageKey != "" {
		b, err := os.ReadFile(*f.packageKey)
		if err == nil {
			cfg.TrustedKey, err = fwpkg.ParsePublicKey(b)
		}
		if err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("-package-key: %w", err)
		}
	}
	eng, err := campaign.New(cfg)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = eng.Run(ctx) }()
	return eng, func() { cancel(); <-done; cleanup() }, nil
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/bootstrap"
)

// The bootstrap server of "lwm2m server": flags -bootstrap,
// -bootstrap-dtls, -bootstrap-psk-file and -bootstrap-config, and the
// command bootstrap-history.

// srvBootstrapFlags are the bootstrap server's flags.
type srvBootstrapFlags struct {
	addr, dtls, pskFile, config *string
}

func srvDefineBootstrapFlags(fs *flag.FlagSet) srvBootstrapFlags {
	return srvBootstrapFlags{
		addr:    fs.String("bootstrap", "", "UDP `address` of a CoAP bootstrap server (needs -bootstrap-config); e.g. :5783. Off by default"),
		dtls:    fs.String("bootstrap-dtls", "", "UDP `address` of a bootstrap server over DTLS with PSK (needs -bootstrap-psk-file and -bootstrap-config); e.g. :5784"),
		pskFile: fs.String("bootstrap-psk-file", "", "the bootstrap server's DTLS credentials `file`, in the -psk-file format"),
		config:  fs.String("bootstrap-config", "", "JSON `file` of what the bootstrap server writes to each endpoint (docs/SERVER.md); SIGHUP reloads it"),
	}
}

// srvBootstrapUsage checks the flags' combination; "" when fine.
func (f srvBootstrapFlags) usage() string {
	on := *f.addr != "" || *f.dtls != ""
	switch {
	case on && *f.config == "":
		return "-bootstrap and -bootstrap-dtls need -bootstrap-config"
	case !on && (*f.config != "" || *f.pskFile != ""):
		return "-bootstrap-config and -bootstrap-psk-file need -bootstrap or -bootstrap-dtls"
	case (*f.dtls == "") != (*f.pskFile == ""):
		return "-bootstrap-dtls and -bootstrap-psk-file go together"
	}
	return ""
}

// start opens the bootstrap server when its flags ask for one, with its
// history in st (nil: in memory), and runs it until ctx ends. stop
// closes it and its history; it is safe to call when none was started.
func (f srvBootstrapFlags) start(ctx context.Context, st *server.BoltStore, log *slog.Logger) (bs *bootstrap.Server, stop func(), err error) {
	stop = func() {}
	if *f.addr == "" && *f.dtls == "" {
		return nil, stop, nil
	}
	cfg, err := bootstrap.LoadConfig(*f.config)
	if err != nil {
		return nil, stop, fmt.Errorf("-bootstrap-config: %w", err)
	}
	bs = &bootstrap.Server{Addr: *f.addr, DTLSAddr: *f.dtls, Config: cfg, Logger: log}
	if *f.pskFile != "" {
		psks, err := server.LoadPSKFile(*f.pskFile)
		if err != nil {
			return nil, stop, fmt.Errorf("-bootstrap-psk-file: %w", err)
		}
		if len(psks) == 0 {
			return nil, stop, fmt.Errorf("-bootstrap-psk-file: %s holds no credentials", *f.pskFile)
		}
		bs.PSKs = psks
	}
	if st != nil {
		// Kept in the -db file, next to the registrations.
		if bs.History, err = bootstrap.OpenHistory(st.DB()); err != nil {
			return nil, stop, err
		}
	} else {
		bs.History = bootstrap.NewHistory()
	}
	if err := bs.Listen(); err != nil {
		bs.History.Close()
		return nil, stop, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := bs.Serve(ctx); err != nil {
			log.Error("bootstrap server", "err", err)
		}
	}()
	// SIGHUP reads -bootstrap-config again; a bad file keeps the old
	// configuration.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-hup:
				if err := f.reload(bs); err != nil {
					log.Error("bootstrap configuration not reloaded; the old one stays", "err", err)
				} else {
					log.Info("bootstrap configuration reloaded", "file", *f.config)
				}
			case <-done:
				return
			}
		}
	}()
	return bs, func() {
		bs.Close()
		<-done
		signal.Stop(hup)
		if err := bs.History.Close(); err != nil {
			log.Error("bootstrap history", "err", err)
		}
	}, nil
}

// reload loads -bootstrap-config into bs.
func (f srvBootstrapFlags) reload(bs *bootstrap.Server) error {
	cfg, err := bootstrap.LoadConfig(*f.config)
	if err != nil {
		return err
	}
	return bs.SetConfig(cfg)
}

// srvBootstrapReady is the ready line's part for the bootstrap server.
func srvBootstrapReady(bs *bootstrap.Server) string {
	if bs == nil {
		return ""
	}
	s := ""
	if a := bs.LocalAddr(); a != nil {
		s += " bootstrap=" + a.String()
	}
	if a := bs.DTLSLocalAddr(); a != nil {
		s += " bootstrap-dtls=" + a.String()
	}
	return s
}

// srvBootstrapHistory prints every endpoint's latest bootstrap, or each
// attempt of one endpoint with what was written.
func srvBootstrapHistory(ctx context.Context, c *srvClient, fs *flag.FlagSet, pos []string, stdout io.Writer) error {
	if len(pos) > 1 {
		return srvUsageError{"bootstrap-history takes at most one endpoint name"}
	}
	if len(pos) == 0 {
		var sums []bootstrap.Summary
		if err := c.call(ctx, "GET", c.api+"/api/bootstrap", nil, &sums); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENDPOINT\tOUTCOME\tSTARTED\tPEER\tTRANSPORT\tIDENTITY\tATTEMPTS\tERROR")
		for _, s := range sums {
			a := s.Latest
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", termSafe(a.Endpoint), termSafe(a.Outcome), a.Started.UTC().Format(time.RFC3339),
				termSafe(a.Peer), termSafe(a.Transport), dash(termSafe(a.PSKIdentity)), s.Attempts, dash(termSafe(a.Error)))
		}
		return tw.Flush()
	}
	var as []bootstrap.Attempt
	if err := c.call(ctx, "GET", c.api+"/api/bootstrap/"+url.PathEscape(pos[0]), nil, &as); err != nil {
		return err
	}
	for i, a := range as {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		line := fmt.Sprintf("%s %s %s from %s over %s", a.Started.UTC().Format(time.RFC3339), termSafe(a.Endpoint), strings.ToUpper(termSafe(a.Outcome)),
			termSafe(a.Peer), termSafe(a.Transport))
		if a.PSKIdentity != "" {
			line += " identity " + termSafe(a.PSKIdentity)
		}
		if a.Code != "" {
			line += " (answered " + termSafe(a.Code) + ")"
		}
		if a.Format != "" && len(a.Steps) > 0 {
			line += " in " + termSafe(a.Format)
		}
		fmt.Fprintln(stdout, line+fmt.Sprintf(", %s", a.Ended.Sub(a.Started).Round(time.Millisecond)))
		for _, st := range a.Steps {
			code := st.Code
			if code == "" {
				code = "no answer"
			}
			what := ""
			if st.What != "" {
				what = " " + termSafe(st.What)
			}
			fmt.Fprintf(stdout, "  %-8s %-5s%s -> %s\n", termSafe(st.Op), termSafe(st.Path), what, termSafe(code))
		}
		if a.Error != "" {
			fmt.Fprintf(stdout, "  error: %s\n", termSafe(a.Error))
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

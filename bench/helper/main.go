// Command helper holds the small servers bench/run.sh needs that no
// standard tool provides. It is not part of the library.
//
//	helper freeport             print a port free for UDP and TCP, with the next one free too
//	helper http DIR             serve DIR over HTTP on 127.0.0.1; print the port, run until killed
//	helper delay HOST:PORT D    UDP proxy adding D each way; print its port, run until killed
//	helper rss CMD ARGS...      run CMD; print its peak RSS (VmHWM) in KiB on stderr
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lossy"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: helper freeport | http DIR | delay HOST:PORT DURATION | rss CMD ARGS...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "freeport":
		err = freePort()
	case "http":
		err = serveHTTP(ctx, os.Args[2])
	case "delay":
		err = delay(ctx, os.Args[2], os.Args[3])
	case "rss":
		err = rss(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
}

func freePort() error {
	for range 100 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		u.Close()
		ok := port < 65535
		for _, p := range []int{port, port + 1} {
			addr := "127.0.0.1:" + strconv.Itoa(p)
			l, err := net.Listen("tcp", addr)
			if err != nil {
				ok = false
				break
			}
			l.Close()
			c, err := net.ListenPacket("udp", addr)
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			fmt.Println(port)
			return nil
		}
	}
	return errors.New("no free port")
}

func serveHTTP(ctx context.Context, dir string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func delay(ctx context.Context, upstream, d string) error {
	dur, err := time.ParseDuration(d)
	if err != nil {
		return err
	}
	ua, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return err
	}
	p, err := lossy.New(ctx, ua, lossy.Config{Delay: dur})
	if err != nil {
		return err
	}
	defer p.Close()
	fmt.Println(p.Addr().Port)
	<-ctx.Done()
	return nil
}

// rss runs a command and reports the peak resident set size of the child
// as the kernel recorded it (VmHWM), sampled until just before it exits.
func rss(args []string) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	peak := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			fmt.Fprintf(os.Stderr, "peak-rss-kib %d\n", peak)
			return err
		case <-tick.C:
			if b, err := os.ReadFile(status); err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))); err == nil {
							peak = max(peak, n)
						}
					}
				}
			}
		}
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// TestServerWildcardBindProcesses runs what a new user runs: "lwm2m
// server" bound to all interfaces on one port, devices that register
// after it started (one over IPv4, which reaches the dual-stack socket as
// an IPv4-mapped address, one over IPv6), and one-shot reads, each a
// process of the built program.
func TestServerWildcardBindProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs server and device processes")
	}
	bin := e2eBuild(t)
	dir := t.TempDir()
	// The server and the one-shot commands must find the API's token
	// file in the same default place, under the user's config directory.
	env := append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	port := freeUDPPort(t)
	srv := startEnv(t, env, "server", bin, "server", "-coap", ":"+port, "-api", "127.0.0.1:0")
	api := waitListening(t, srv)
	devices := map[string]string{"dev-v4": "127.0.0.1", "dev-v6": "::1"}
	for ep, host := range devices {
		startEnv(t, env, ep, bin, "client", "-endpoint", ep, "-server", "coap://"+net.JoinHostPort(host, port),
			"-state-dir", filepath.Join(dir, ep), "-lifetime", "120", "-retries", "2")
	}
	for ep := range devices {
		waitListed(t, env, bin, api, ep)
		// A request to a device that registered after start-up; the
		// server's own timeout is 30 s, the test's is shorter.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		cmd := exec.CommandContext(ctx, bin, "server", "read", "-api", api, "-ep", ep, "/3/0/0")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "/3/0/0") {
			t.Errorf("read /3/0/0 on %s: %v\n%s", ep, err, out)
		}
	}
}

// startEnv runs the program with env (nil: this process's), stopped when
// the test ends.
func startEnv(t *testing.T, env []string, name, bin string, args ...string) *e2eProc {
	t.Helper()
	p := &e2eProc{name: name, cmd: exec.Command(bin, args...), out: &e2eBuffer{}, log: &e2eBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr, p.cmd.Env = p.out, p.log, env
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", name, p.log.tail(3000))
		}
	})
	return p
}

// waitListening returns the API URL from the server's "listening" line.
func waitListening(t *testing.T, p *e2eProc) string {
	t.Helper()
	return e2eAPI(t, e2eFirstLine(t, 20*time.Second, p.out.String, p.exited))
}

// waitListed runs "lwm2m server list" until it shows ep.
func waitListed(t *testing.T, env []string, bin, api, ep string) {
	t.Helper()
	waitfor.Until(t, 20*time.Second, func() error {
		cmd := exec.Command(bin, "server", "list", "-api", api)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), ep) {
			return fmt.Errorf("%s not listed: %v\n%s", ep, err, out)
		}
		return nil
	})
}

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
}

// The registration limits are flags of "lwm2m server".
func TestServerLimitFlags(t *testing.T) {
	for _, args := range [][]string{{"-max-registrations", "0"}, {"-max-lifetime", "10ms"}} {
		var out, errb bytes.Buffer
		if code := runServer(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, code)
		}
	}
	if testing.Short() {
		return
	}
	bin := e2eBuild(t)
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	srv := startEnv(t, env, "server", bin, "server", "-coap", "127.0.0.1:0", "-api", "127.0.0.1:0", "-max-registrations", "1")
	waitListening(t, srv)
	line, _, _ := strings.Cut(srv.out.String(), "\n")
	var coap string
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "coap="); ok {
			coap = v
		}
	}
	cc, err := coapudp.Dial(coap)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for i, want := range []codes.Code{codes.Created, codes.ServiceUnavailable} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := cc.Post(ctx, "/rd", message.AppLinkFormat, strings.NewReader("</3/0>"),
			message.Option{ID: message.URIQuery, Value: []byte("ep=limit-" + strconv.Itoa(i))})
		cancel()
		if err != nil || resp.Code() != want {
			t.Errorf("register %d: %v %v, want %v", i, resp, err, want)
		}
	}
}

package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// The programs as users run them (docs/BOOTSTRAP.md): "lwm2m server" is
// the bootstrap server and the LwM2M server, "lwm2m client -config"
// bootstraps from its factory file, registers, takes a firmware update,
// and after a restart registers without bootstrapping again.
func TestClientBootstrapsFromOurServer(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	coapAddr := freeUDPAddr(t)
	bsConfig := filepath.Join(dir, "bs.json")
	if err := os.WriteFile(bsConfig, []byte(`{"endpoints": {"*": {"delete": ["/"],
  "servers": [{"uri": "coap://`+coapAddr+`", "short_server_id": 1, "lifetime": 120, "security": {"mode": "nosec"}}]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := e2eStartServer(t, bin, "-coap", coapAddr, "-bootstrap", "127.0.0.1:0", "-bootstrap-config", bsConfig,
		"-db", filepath.Join(dir, "server.db"))
	line, _, _ := strings.Cut(s.out.String(), "\n")
	var bsAddr string
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "bootstrap="); ok {
			bsAddr = v
		}
	}
	if bsAddr == "" {
		t.Fatalf("no bootstrap= in %q", line)
	}
	factory := filepath.Join(dir, "factory.json")
	if err := os.WriteFile(factory, []byte(`{"security": [{"uri": "coap://`+bsAddr+`", "bootstrap": true}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	const ep = "e2e-bootstrap"
	args := []string{"client", "-endpoint", ep, "-config", factory, "-state-dir", filepath.Join(dir, ep), "-lifetime", "120"}
	dev := e2eStart(t, "device", bin, args...)
	waitListed := func() {
		t.Helper()
		waitfor.Until(t, 20*time.Second, func() error {
			code, out, errs := e2eCLI(t, s.api, "list")
			if code != 0 || !strings.Contains(out, ep) {
				return fmt.Errorf("%s not listed: %d %s %s\ndevice log:\n%s", ep, code, out, errs, dev.log.tail(2000))
			}
			return nil
		})
	}
	waitListed()
	history := func() string {
		t.Helper()
		code, out, errs := e2eCLI(t, s.api, "bootstrap-history", ep)
		if code != 0 {
			t.Fatalf("bootstrap-history: %d %s", code, errs)
		}
		return out
	}
	if h := history(); strings.Count(h, "FINISHED") != 1 {
		t.Fatalf("bootstrap history:\n%s", h)
	}

	// The first update.
	fw := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(fw, []byte(strings.Repeat("firmware 2.0\n", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "fw.pkg")
	if code := run([]string{"pack", "-in", fw, "-out", pkg, "-name", "fw", "-version", "2.0"}, os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("pack: exit %d", code)
	}
	if code, out, errs := e2eCLI(t, s.api, "update", "-ep", ep, "-package", pkg, "-timeout", "60s"); code != 0 || !strings.Contains(out+errs, "Success") {
		t.Fatalf("update: exit %d\n%s%s\ndevice log:\n%s", code, out, errs, dev.log.tail(3000))
	}

	// A restart registers at once with what was provisioned.
	dev.stop()
	dev = e2eStart(t, "device", bin, args...)
	waitfor.Until(t, 20*time.Second, func() error {
		if !strings.Contains(dev.log.String(), "starting from the provisioned configuration") || !strings.Contains(dev.log.String(), "msg=registered") {
			return fmt.Errorf("the restarted device did not register from its stored configuration:\n%s", dev.log.tail(2000))
		}
		return nil
	})
	if h := history(); strings.Count(h, "FINISHED") != 1 {
		t.Errorf("the restarted device bootstrapped again:\n%s", h)
	}
}

// freeUDPAddr returns a loopback UDP address that was free a moment ago,
// for a server that must be named in a file before it starts.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// The same over DTLS on both legs, with the flags instead of a factory
// file: "lwm2m client -bootstrap coaps://... -psk-identity -psk-key"
// receives the LwM2M server's own PSK from the bootstrap server. No key
// appears in either program's output.
func TestClientBootstrapsFromOurServerDTLS(t *testing.T) {
	const bsKey, srvKey = "000102030405060708090a0b0c0d0e0f", "101112131415161718191a1b1c1d1e1f"
	const ep = "e2e-bootstrap-dtls"
	bin := e2eBuild(t)
	dir := t.TempDir()
	coapsAddr := freeUDPAddr(t)
	files := map[string]string{
		"bs.json": `{"endpoints": {"` + ep + `": {"bootstrap_identity": "bs-` + ep + `", "delete": ["/"],
  "servers": [{"uri": "coaps://` + coapsAddr + `", "short_server_id": 1, "lifetime": 120,
               "security": {"mode": "psk", "identity": "` + ep + `", "key": "` + srvKey + `"}}]}}}`,
		"bs-psk.txt": "bs-" + ep + ":" + bsKey + "\n",
		"psk.txt":    ep + ":" + srvKey + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-coaps", coapsAddr, "-psk-file", filepath.Join(dir, "psk.txt"),
		"-bootstrap-dtls", "127.0.0.1:0", "-bootstrap-psk-file", filepath.Join(dir, "bs-psk.txt"),
		"-bootstrap-config", filepath.Join(dir, "bs.json"))
	line, _, _ := strings.Cut(s.out.String(), "\n")
	var bsAddr string
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "bootstrap-dtls="); ok {
			bsAddr = v
		}
	}
	if bsAddr == "" {
		t.Fatalf("no bootstrap-dtls= in %q", line)
	}
	dev := e2eStart(t, "device", bin, "client", "-endpoint", ep, "-bootstrap", "coaps://"+bsAddr,
		"-psk-identity", "bs-"+ep, "-psk-key", bsKey, "-state-dir", filepath.Join(dir, ep), "-v")
	waitfor.Until(t, 20*time.Second, func() error {
		code, out, errs := e2eCLI(t, s.api, "list")
		if code != 0 || !strings.Contains(out, ep) || !strings.Contains(out, "psk:"+ep) {
			return fmt.Errorf("%s not listed over DTLS: %d %s %s\ndevice log:\n%s", ep, code, out, errs, dev.log.tail(2000))
		}
		return nil
	})
	for _, out := range []string{dev.log.String(), dev.out.String(), s.log.String(), s.out.String()} {
		if strings.Contains(out, bsKey) || strings.Contains(out, srvKey) {
			t.Errorf("a key in the output:\n%s", out)
		}
	}
}

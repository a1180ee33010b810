package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// multiDevices is the size of the fleet in the multi-device update.
const multiDevices = 20

// TestServerE2E runs "lwm2m server" and real "lwm2m client" processes on
// loopback and drives every server command through the CLI: reads,
// writes, observe, discover, exec, updates by push, pull over CoAP and
// pull over HTTP, failing updates, a 20-device update, and a restart of
// the server on the same ports and database.
func TestServerE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs server and device processes")
	}
	bin := e2eBuild(t)
	dir := t.TempDir()

	// Keys and packages, made with "lwm2m keygen" and "lwm2m pack". The
	// payload is not an executable: the device installs it as
	// firmware.bin, re-execs its own program and reports the new version.
	var o, e bytes.Buffer
	if code := runKeygen(context.Background(), []string{"-out", filepath.Join(dir, "signer")}, &o, &e); code != 0 {
		t.Fatalf("keygen: %s", e.String())
	}
	key, pub := filepath.Join(dir, "signer.key"), filepath.Join(dir, "signer.pub")
	payload := make([]byte, 200<<10)
	rand.Read(payload)
	image := filepath.Join(dir, "firmware.img")
	if err := os.WriteFile(image, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	pkg := func(version string, signed bool) string {
		out := filepath.Join(dir, "fw-"+version+".pkg")
		k := key
		if !signed {
			k, out = "", filepath.Join(dir, "fw-"+version+"-unsigned.pkg")
		}
		e2ePack(t, image, out, version, k)
		return out
	}

	pskFile := filepath.Join(dir, "psk.txt")
	psk := []byte("secret psk 0123")
	os.WriteFile(pskFile, []byte("# identity:hexkey\ngateway-7:"+hex.EncodeToString(psk)+"\n"), 0o600)

	db := filepath.Join(dir, "server.db")
	srv := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-http", "127.0.0.1:0", "-db", db, "-public-host", "127.0.0.1",
		"-coaps", "127.0.0.1:0", "-psk-file", pskFile)
	api := srv.api

	devDir := filepath.Join(dir, "devices")
	devs := []*e2eProc{e2eDevice(t, bin, devDir, srv.coap, "solo", "-trusted-key", pub)}
	var fleet []string
	for i := range multiDevices {
		fleet = append(fleet, e2eEP(i))
		devs = append(devs, e2eDevice(t, bin, devDir, srv.coap, e2eEP(i), "-trusted-key", pub))
	}
	// Registered after the devices, so it runs before their own
	// cleanups: the server is gone by then and each device waits for
	// its De-register to time out, so stop them all at once.
	t.Cleanup(func() { e2eStopAll(devs) })
	regs := e2eWaitRegistered(t, api, nil, append([]string{"solo"}, fleet...)...)

	t.Run("list", func(t *testing.T) {
		out := e2eMustCLI(t, api, "list")
		e2eWant(t, "list", out, "ENDPOINT", "solo", "dev-00", "dev-19", "</5/0>", regs["solo"].ID)
	})

	t.Run("read", func(t *testing.T) {
		e2eWant(t, "read /3/0/3", e2eRead(t, api, "solo", "/3/0/3"), "/3/0/3 = 1.0 (string)")
		out := e2eMustCLI(t, api, "read", "-ep", "solo", "-format", "tlv", "/3/0")
		e2eWant(t, "read tlv /3/0", out, "/3/0/0 = lwm2m-fota (string)", "/3/0/2 = solo (string)")
		out = e2eMustCLI(t, api, "read", "-ep", "solo", "-format", "senml-json", "/5/0/3")
		e2eWant(t, "read senml-json /5/0/3", out, "/5/0/3 = 0 (integer)")
		if code, _, errs := e2eCLI(t, api, "read", "-ep", "solo", "/42/0/1"); code != 1 || !strings.Contains(errs, "4.04") {
			t.Errorf("read of a missing object: exit %d, want 1 with 4.04: %s", code, errs)
		}
	})

	t.Run("write and observe", func(t *testing.T) {
		e2eMustCLI(t, api, "write", "-ep", "solo", "/1/0/1", "300")
		e2eWant(t, "read back", e2eRead(t, api, "solo", "/1/0/1"), "/1/0/1 = 300")
		out := e2eMustCLI(t, api, "observe", "-ep", "solo", "-n", "1", "/3/0/3")
		e2eWant(t, "observe -n 1", out, "/3/0/3 = 1.0")

		// Two notifications: the current value, then the one a write
		// causes.
		var wg sync.WaitGroup
		var code int
		var obsOut, obsErr string
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var buf e2eBuffer
		wg.Add(1)
		go func() {
			defer wg.Done()
			var eb bytes.Buffer
			code = runServer(ctx, []string{"observe", "-api", api, "-ep", "solo", "-n", "2", "/1/0/1"}, &buf, &eb)
			obsOut, obsErr = buf.String(), eb.String()
		}()
		for !strings.Contains(buf.String(), "= 300") && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		e2eMustCLI(t, api, "write", "-ep", "solo", "/1/0/1", "301")
		wg.Wait()
		if code != 0 {
			t.Fatalf("observe -n 2: exit %d: %s", code, obsErr)
		}
		e2eWant(t, "observe -n 2", obsOut, "/1/0/1 = 300", "/1/0/1 = 301")
	})

	t.Run("discover", func(t *testing.T) {
		out := e2eMustCLI(t, api, "discover", "-ep", "solo", "/5/0")
		e2eWant(t, "discover /5/0", out, "</5/0/1>", "</5/0/3>", "</5/0/5>")
	})

	t.Run("exec", func(t *testing.T) {
		// Update (/5/0/2) without a package is refused by the device.
		if code, _, errs := e2eCLI(t, api, "exec", "-ep", "solo", "/5/0/2"); code != 1 {
			t.Errorf("exec /5/0/2 in Idle: exit %d, want 1: %s", code, errs)
		}
		// Reboot (/3/0/4): the device re-execs and registers again.
		e2eMustCLI(t, api, "exec", "-ep", "solo", "/3/0/4")
		e2eWaitRegistered(t, api, map[string]string{"solo": regs["solo"].ID}, "solo")
		e2eWant(t, "read after reboot", e2eRead(t, api, "solo", "/3/0/3"), "= 1.0")
	})

	update := func(t *testing.T, target, pkgFile, method string) (int, string) {
		t.Helper()
		args := []string{"update", "-package", pkgFile, "-method", method, "-timeout", "90s"}
		if strings.ContainsAny(target, "*?[") {
			args = append(args, "-match", target)
		} else {
			args = append(args, "-ep", target)
		}
		code, out, errs := e2eCLI(t, api, args...)
		t.Logf("lwm2m server %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		return code, out + errs
	}
	success := func(t *testing.T, version, method string) {
		code, out := update(t, "solo", pkg(version, true), method)
		if code != 0 {
			t.Fatalf("update by %s: exit %d\n%s", method, code, out)
		}
		e2eWant(t, "update output", out, "solo: state Downloaded", "solo: executing Update", "solo: Success")
		e2eWant(t, "firmware version", e2eRead(t, api, "solo", "/3/0/3"), "/3/0/3 = "+version+" (string)")
		e2eWant(t, "update result", e2eRead(t, api, "solo", "/5/0/5"), "/5/0/5 = 1 (integer)")
	}
	t.Run("push", func(t *testing.T) { success(t, "2.0", "push") })
	t.Run("pull", func(t *testing.T) { success(t, "3.0", "pull") })
	t.Run("pull-http", func(t *testing.T) { success(t, "4.0", "pull-http") })

	failure := func(t *testing.T, pkgFile string, result, name string) {
		t.Helper()
		code, out := update(t, "solo", pkgFile, "pull")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, out)
		}
		e2eWant(t, "update output", out, "solo: FAILED", "result "+result+" ("+name+")", "1 of 1 devices failed")
		e2eWant(t, "update result", e2eRead(t, api, "solo", "/5/0/5"), "/5/0/5 = "+result+" (integer)")
		e2eWant(t, "firmware version", e2eRead(t, api, "solo", "/3/0/3"), "/3/0/3 = 4.0 (string)")
	}
	t.Run("corrupted package", func(t *testing.T) {
		b, err := os.ReadFile(pkg("5.0", true))
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-100] ^= 0x40 // a payload byte: the hash no longer matches
		bad := filepath.Join(dir, "corrupted.pkg")
		os.WriteFile(bad, b, 0o600)
		failure(t, bad, "5", "Integrity check failure")
	})
	t.Run("unsigned package", func(t *testing.T) {
		failure(t, pkg("5.0", false), "5", "Integrity check failure")
	})
	t.Run("not a package", func(t *testing.T) {
		failure(t, image, "6", "Unsupported package type")
	})

	t.Run("20 devices", func(t *testing.T) {
		code, out := update(t, "dev-*", pkg("2.0", true), "pull")
		if code != 0 {
			t.Fatalf("update -match dev-*: exit %d\n%s", code, out)
		}
		if strings.Contains(out, "solo") {
			t.Errorf("solo does not match dev-*:\n%s", out)
		}
		for _, ep := range fleet {
			e2eWant(t, "update output", out, ep+": Success")
			e2eWant(t, ep, e2eRead(t, api, ep, "/3/0/3"), "/3/0/3 = 2.0")
		}
	})

	t.Run("dtls", func(t *testing.T) {
		if _, err := e2eDTLSDevice(t, srv.coaps, "gateway-7", []byte("wrong key"), "0"); err == nil {
			t.Error("handshake with a wrong PSK succeeded")
		}
		if _, err := e2eDTLSDevice(t, srv.coaps, "stranger", psk, "0"); err == nil {
			t.Error("handshake with an unknown identity succeeded")
		}
		cc, err := e2eDTLSDevice(t, srv.coaps, "gateway-7", psk, "7.7")
		if err != nil {
			t.Fatal(err)
		}
		e2eRegister(t, cc, "secure-gw")
		e2eWant(t, "list", e2eMustCLI(t, api, "list"), "secure-gw", "psk:gateway-7")
		e2eWant(t, "read over DTLS", e2eRead(t, api, "secure-gw", "/3/0/3"), "/3/0/3 = 7.7")
	})

	t.Run("dtls device update", func(t *testing.T) {
		// The reference device over coaps with a PSK: registration, reads
		// and a Block1 push all go over its DTLS session.
		if out, _ := exec.Command(bin, "client", "-h").CombinedOutput(); !strings.Contains(string(out), "-psk-identity") {
			t.Skip("lwm2m client has no -psk-identity yet")
		}
		e2eStart(t, "device secure-dev", bin, "client", "-endpoint", "secure-dev", "-server", "coaps://"+srv.coaps,
			"-psk-identity", "gateway-7", "-psk-key", hex.EncodeToString(psk),
			"-state-dir", filepath.Join(devDir, "secure-dev"), "-lifetime", "120", "-trusted-key", pub)
		regs := e2eWaitRegistered(t, api, nil, "secure-dev")
		if r := regs["secure-dev"]; !r.Secure || r.PSKIdentity != "gateway-7" {
			t.Fatalf("registration %+v", r)
		}
		e2eWant(t, "read over DTLS", e2eRead(t, api, "secure-dev", "/3/0/3"), "/3/0/3 = 1.0")
		code, out := update(t, "secure-dev", pkg("2.0", true), "push")
		if code != 0 {
			t.Fatalf("push over DTLS: exit %d\n%s", code, out)
		}
		e2eWant(t, "push over DTLS", out, "secure-dev: sent 204935/204935", "secure-dev: Success")
		e2eWant(t, "version after push", e2eRead(t, api, "secure-dev", "/3/0/3"), "/3/0/3 = 2.0")
	})

	t.Run("restart", func(t *testing.T) {
		before, err := e2eRegistrations(api)
		if err != nil {
			t.Fatal(err)
		}
		srv.stop()
		// The devices keep their registrations and do not register again:
		// the new server process must know them from the database alone.
		srv2 := e2eStartServer(t, bin, "-coap", srv.coap, "-db", db, "-coaps", "127.0.0.1:0", "-psk-file", pskFile)
		out := e2eMustCLI(t, srv2.api, "list")
		for _, ep := range append([]string{"solo"}, fleet...) {
			e2eWant(t, "list after restart", out, ep+" ", before[ep].ID)
		}
		e2eWant(t, "solo after restart", e2eRead(t, srv2.api, "solo", "/3/0/3"), "/3/0/3 = 4.0")
		e2eWant(t, "dev-07 after restart", e2eRead(t, srv2.api, "dev-07", "/3/0/3"), "/3/0/3 = 2.0")
		after, err := e2eRegistrations(srv2.api)
		if err != nil {
			t.Fatal(err)
		}
		// The DTLS session died with the old process, and a DTLS server
		// cannot start one: the device is listed but not reachable.
		e2eWant(t, "list after restart", out, "secure-gw", "psk:gateway-7")
		if code, _, errs := e2eCLI(t, srv2.api, "read", "-ep", "secure-gw", "/3/0/3"); code != 1 || !strings.Contains(errs, "no DTLS session") {
			t.Errorf("read of a DTLS device after a restart: exit %d: %s", code, errs)
		}
		if after["solo"].ID != before["solo"].ID {
			t.Errorf("solo registered again (%s, was %s); the test wants the stored registration", after["solo"].ID, before["solo"].ID)
		}
	})
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"

	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// srvInProcess runs "lwm2m server ARGS" in this process on loopback and
// returns its API URL.
func srvInProcess(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runServer(ctx, append([]string{"-coap", "127.0.0.1:0", "-api", "127.0.0.1:0"}, args...), &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	exited := func() error {
		select {
		case code := <-done:
			done <- code // for the cleanup
			return fmt.Errorf("server exited %d: %s", code, errb.String())
		default:
			return nil
		}
	}
	return e2eAPI(t, e2eFirstLine(t, 10*time.Second, out.String, exited))
}

// TestServerTokenFile: the server makes its token file private, reuses
// it across restarts, and commands need the same file.
func TestServerTokenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "conf", "lwm2m")
	tokFile := filepath.Join(dir, "api-token")
	api := srvInProcess(t, "-token-file", tokFile)
	st, err := os.Stat(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", st.Mode().Perm())
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("token directory mode %v, want 0700", st.Mode().Perm())
	}
	tok, _ := os.ReadFile(tokFile)
	if code, out, errs := srvRun(t, "list", "-api", api, "-token-file", tokFile); code != 0 || !strings.Contains(out, "ENDPOINT") {
		t.Errorf("list with the token file: exit %d: %s", code, errs)
	}
	t.Setenv(srvTokenEnv, tokFile)
	if code, _, errs := srvRun(t, "list", "-api", api); code != 0 {
		t.Errorf("list with $%s: exit %d: %s", srvTokenEnv, code, errs)
	}
	other := filepath.Join(t.TempDir(), "other")
	os.WriteFile(other, []byte("not-the-token\n"), 0o600)
	if code, _, errs := srvRun(t, "list", "-api", api, "-token-file", other); code != 1 || !strings.Contains(errs, "-token-file") {
		t.Errorf("list with another token: exit %d: %s", code, errs)
	}
	if code, _, errs := srvRun(t, "list", "-api", api, "-token-file", filepath.Join(t.TempDir(), "none")); code != 1 || !strings.Contains(errs, "does not exist") {
		t.Errorf("list without a token file: exit %d: %s", code, errs)
	}
	// A second server with the same file keeps the token.
	srvInProcess(t, "-token-file", tokFile)
	if tok2, _ := os.ReadFile(tokFile); !bytes.Equal(tok, tok2) {
		t.Error("the token changed on restart")
	}
}

// TestServerUpdateRefusesBadPackages: what cannot be a package is refused
// before anything is sent, at once (a FIFO once hung the command, and
// /dev/zero pinned a core of the server).
func TestServerUpdateRefusesBadPackages(t *testing.T) {
	api := srvStart(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, c := range []struct{ name, file, msg string }{
		{"device", "/dev/zero", "not a regular file"},
		{"fifo", fifo, "not a regular file"},
		{"directory", dir, "not a regular file"},
		{"empty", empty, "is empty"},
		{"missing", filepath.Join(dir, "none"), "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, errs := srvRun(t, "update", "-api", api, "-ep", "dev1", "-package", c.file, "-timeout", "5s")
			if code != 1 || !strings.Contains(errs, c.msg) {
				t.Errorf("exit %d, want 1 with %q: %s", code, c.msg, errs)
			}
		})
	}
}

// TestServerOutputIsTerminalSafe: device-provided strings cannot forge
// rows or send escape sequences to the operator's terminal.
func TestServerOutputIsTerminalSafe(t *testing.T) {
	api, coapAddr := srvStartCoAP(t)
	srvRegister(t, coapAddr, "evil\nforged-row\x1b]0;pwned\a", "1.1\x1b[2J")
	code, out, errs := srvRun(t, "list", "-api", api)
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, errs)
	}
	if strings.ContainsAny(out, "\x1b\a") {
		t.Errorf("list printed control characters: %q", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "forged-row") {
			t.Errorf("a device name forged a row: %q", out)
		}
	}
	if !strings.Contains(out, `"evil\nforged-row\x1b]0;pwned\a"`) {
		t.Errorf("the name is not shown escaped: %q", out)
	}
	code, _, errs = srvRun(t, "read", "-api", api, "-ep", "no\x1b[2Jbody", "/3/0")
	if code != 1 || strings.Contains(errs, "\x1b") {
		t.Errorf("read of an unknown endpoint: exit %d: %q", code, errs)
	}
}

func srvRegister(t *testing.T, coapAddr, ep, version string) {
	t.Helper()
	cc, err := coapudp.Dial(coapAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/rd", message.AppLinkFormat, strings.NewReader("</3/0>"),
		message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)},
		message.Option{ID: message.URIQuery, Value: []byte("lwm2m=" + version)})
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("register: %v %v", resp, err)
	}
}

// TestServerPrintContent: an answer that could not be decoded is an
// error (exit 1), never its raw bytes on the terminal; values are escaped.
func TestServerPrintContent(t *testing.T) {
	var out bytes.Buffer
	err := srvPrintContent(&out, httpapi.Content{Format: 11542, Payload: "yAAFYQ==", Error: "tlv: truncated"})
	if err == nil || out.Len() != 0 {
		t.Errorf("undecodable answer: err %v, printed %q", err, out.String())
	}
	out.Reset()
	err = srvPrintContent(&out, httpapi.Content{Records: []httpapi.Record{{Path: "/3/0/0", Type: "string", Value: "a\x1b[2J\nb"}}})
	if err != nil || out.String() != "/3/0/0 = \"a\\x1b[2J\\nb\" (string)\n" {
		t.Errorf("err %v, printed %q", err, out.String())
	}
}

// TestServerUpdateTooLarge: a package beyond -max-package-size is refused
// with a message that names the flag, and the command exits 1.
func TestServerUpdateTooLarge(t *testing.T) {
	api := srvInProcess(t, "-max-package-size", "1000")
	pkg := filepath.Join(t.TempDir(), "big.pkg")
	os.WriteFile(pkg, make([]byte, 4<<20), 0o600)
	code, _, errs := srvRun(t, "update", "-api", api, "-match", "*", "-package", pkg)
	if code != 1 || !strings.Contains(errs, "-max-package-size") {
		t.Errorf("exit %d: %s", code, errs)
	}
}

// TestFlagBeforeCommand: a flag before the command says where flags go.
func TestFlagBeforeCommand(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"-api", "http://127.0.0.1:1", "server", "list"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "flags go after it") || strings.Count(errb.String(), "usage: lwm2m") != 1 {
		t.Errorf("exit %d: %q", code, errb.String())
	}
}

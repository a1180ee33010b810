package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
)

func packRunCmd(t *testing.T, f func(context.Context, []string, io.Writer, io.Writer) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := f(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func packVerifyFile(t *testing.T, path string, opts fwpkg.VerifyOptions) (fwpkg.Header, []byte, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var payload bytes.Buffer
	v := fwpkg.NewVerifier(&payload, opts)
	v.Write(data)
	h, err := v.Close()
	return h, payload.Bytes(), err
}

func TestKeygenAndSignedPack(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "signing")
	code, _, stderr := packRunCmd(t, runKeygen, "-out", prefix)
	if code != 0 {
		t.Fatalf("keygen exit %d: %s", code, stderr)
	}
	st, err := os.Stat(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode().Perm())
	}
	pubPEM, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := fwpkg.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}

	image := filepath.Join(dir, "image.bin")
	payload := bytes.Repeat([]byte("firmware"), 10000)
	os.WriteFile(image, payload, 0o644)
	pkg := filepath.Join(dir, "image.pkg")
	// --flag spelling, as users type it.
	code, stdout, stderr := packRunCmd(t, runPack, "--in", image, "--out", pkg, "--name", "fw", "--version", "1.2", "--signing-key", prefix+".key")
	if code != 0 {
		t.Fatalf("pack exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "signed") {
		t.Errorf("stdout %q does not say the package is signed", stdout)
	}
	h, got, err := packVerifyFile(t, pkg, fwpkg.VerifyOptions{TrustedKey: pub})
	if err != nil {
		t.Fatalf("package does not verify with the keygen public key: %v", err)
	}
	if h.Name != "fw" || h.Version != "1.2" || !bytes.Equal(got, payload) {
		t.Fatalf("header %+v, payload %d bytes", h, len(got))
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("directory holds %d entries, want 4 (key, pub, image, pkg)", len(entries))
	}
}

func TestPackUnsigned(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.bin")
	os.WriteFile(image, []byte("hello"), 0o644)
	pkg := filepath.Join(dir, "out.pkg")
	code, _, stderr := packRunCmd(t, runPack, "-in", image, "-out", pkg, "-name", "n", "-version", "v")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	h, got, err := packVerifyFile(t, pkg, fwpkg.VerifyOptions{})
	if err != nil || h.Signed() || string(got) != "hello" {
		t.Fatalf("got %+v %q %v", h, got, err)
	}
	// A device that requires a signature rejects it.
	pub, _, _ := fwpkg.GenerateKey(nil)
	if _, _, err := packVerifyFile(t, pkg, fwpkg.VerifyOptions{TrustedKey: pub}); !errors.Is(err, fwpkg.ErrIntegrity) {
		t.Fatalf("unsigned package with a trusted key: %v", err)
	}
}

func TestPackUsage(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.bin")
	os.WriteFile(image, []byte("x"), 0o644)
	out := filepath.Join(dir, "o.pkg")
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"help", []string{"-h"}, 0},
		{"no flags", nil, 2},
		{"missing -out", []string{"-in", image, "-name", "n", "-version", "v"}, 2},
		{"missing -name", []string{"-in", image, "-out", out, "-version", "v"}, 2},
		{"missing -version", []string{"-in", image, "-out", out, "-name", "n"}, 2},
		{"unknown flag", []string{"-bogus"}, 2},
		{"extra argument", []string{"-in", image, "-out", out, "-name", "n", "-version", "v", "extra"}, 2},
		{"missing input", []string{"-in", filepath.Join(dir, "nope"), "-out", out, "-name", "n", "-version", "v"}, 1},
		{"input is a directory", []string{"-in", dir, "-out", out, "-name", "n", "-version", "v"}, 1},
		{"unwritable output", []string{"-in", image, "-out", filepath.Join(dir, "no", "such", "dir.pkg"), "-name", "n", "-version", "v"}, 1},
		{"missing key", []string{"-in", image, "-out", out, "-name", "n", "-version", "v", "-signing-key", filepath.Join(dir, "nope.key")}, 1},
		{"key is not a key", []string{"-in", image, "-out", out, "-name", "n", "-version", "v", "-signing-key", image}, 1},
		{"name too long", []string{"-in", image, "-out", out, "-name", strings.Repeat("n", 256), "-version", "v"}, 1},
	}
	for _, tt := range tests {
		code, stdout, stderr := packRunCmd(t, runPack, tt.args...)
		if code != tt.code {
			t.Errorf("%s: exit %d, want %d (stderr %q)", tt.name, code, tt.code, stderr)
		}
		if tt.code == 0 && !strings.Contains(stdout, "-signing-key") {
			t.Errorf("%s: usage on stdout does not list -signing-key", tt.name)
		}
		if tt.code != 0 && stderr == "" {
			t.Errorf("%s: no message on stderr", tt.name)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed pack left %s behind", out)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("failed packs left temporary files: %v", entries)
	}
}

func TestPackKeepsOldOutputOnFailure(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "o.pkg")
	os.WriteFile(out, []byte("old"), 0o644)
	code, _, _ := packRunCmd(t, runPack, "-in", filepath.Join(dir, "nope"), "-out", out, "-name", "n", "-version", "v")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Fatalf("output changed to %q", b)
	}
}

func TestPackCancelled(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.bin")
	os.WriteFile(image, []byte("x"), 0o644)
	out := filepath.Join(dir, "o.pkg")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var sink bytes.Buffer
	if code := runPack(ctx, []string{"-in", image, "-out", out, "-name", "n", "-version", "v"}, &sink, &sink); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("a cancelled pack left its output")
	}
}

func TestKeygenUsageAndOverwrite(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "k")
	if code, _, _ := packRunCmd(t, runKeygen, "-h"); code != 0 {
		t.Errorf("-h: exit %d, want 0", code)
	}
	if code, _, _ := packRunCmd(t, runKeygen); code != 2 {
		t.Errorf("no -out: exit %d, want 2", code)
	}
	if code, _, _ := packRunCmd(t, runKeygen, "-out", filepath.Join(dir, "no", "such", "k")); code != 1 {
		t.Errorf("unwritable: exit %d, want 1", code)
	}
	if code, _, stderr := packRunCmd(t, runKeygen, "-out", prefix); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	first, _ := os.ReadFile(prefix + ".key")
	if code, _, _ := packRunCmd(t, runKeygen, "-out", prefix); code != 1 {
		t.Errorf("existing key: exit %d, want 1", code)
	}
	if again, _ := os.ReadFile(prefix + ".key"); !bytes.Equal(again, first) {
		t.Error("keygen overwrote an existing key without -force")
	}
	if code, _, _ := packRunCmd(t, runKeygen, "--out", prefix, "--force"); code != 0 {
		t.Errorf("-force: exit %d, want 0", code)
	}
	if again, _ := os.ReadFile(prefix + ".key"); bytes.Equal(again, first) {
		t.Error("-force did not replace the key")
	}
	priv, err := os.ReadFile(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	k, err := fwpkg.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(prefix + ".pub")
	pub, err := fwpkg.ParsePublicKey(pubPEM)
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("PREFIX.pub does not match PREFIX.key: %v", err)
	}
}

// pack -in X -out X would replace the image with its own package; so would
// -out naming the same file by another path (a hard link, a symlink).
func TestPackRefusesSameFile(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "image.bin")
	if err := os.WriteFile(image, []byte("the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "hardlink.bin")
	if err := os.Link(image, link); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(dir, "symlink.bin")
	if err := os.Symlink(image, sym); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{image, filepath.Join(dir, ".", "image.bin"), link, sym} {
		code, _, stderr := packRunCmd(t, runPack, "-in", image, "-out", out, "-name", "n", "-version", "v")
		if code != 2 || !strings.Contains(stderr, "same file") {
			t.Errorf("-out %s: exit %d, want 2 and 'same file' (stderr %q)", out, code, stderr)
		}
		if b, _ := os.ReadFile(image); string(b) != "the image" {
			t.Fatalf("-out %s replaced the image with %d bytes", out, len(b))
		}
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

func testDevice(t *testing.T, trusted []byte) *fileDevice {
	t.Helper()
	dir := t.TempDir()
	return &fileDevice{dir: dir, exe: filepath.Join(dir, "prog"), trusted: trusted, maxPayload: 1 << 30,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func testPackage(t *testing.T, payload []byte, key []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := fwpkg.Pack(&b, bytes.NewReader(payload), int64(len(payload)), "fw", "2.0", key); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func partSize(t *testing.T, d *fileDevice) int64 {
	st, err := os.Stat(d.path(partFile))
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// The header is checked before anything is stored (docs/PACKAGE_FORMAT.md):
// the first block of an unsigned package under a trusted key, or of
// something that is not a package, is refused and leaves nothing on disk.
func TestDeviceRefusesBeforeStoring(t *testing.T) {
	pub, priv, err := fwpkg.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := fwpkg.GenerateKey(rand.Reader)
	payload := bytes.Repeat([]byte("x"), 64<<10)
	for _, tc := range []struct {
		name string
		pkg  []byte
		want error
	}{
		{"unsigned", testPackage(t, payload, nil), fwpkg.ErrIntegrity},
		{"signed by another key", testPackage(t, payload, other), fwpkg.ErrIntegrity},
		{"not a package", payload, fwpkg.ErrNotPackage},
	} {
		d := testDevice(t, pub)
		if err := d.StreamOpen(context.Background(), "", nil); err != nil {
			t.Fatal(err)
		}
		err := d.StreamWrite(tc.pkg[:1024])
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: first block: %v, want %v", tc.name, err, tc.want)
		}
		if n := partSize(t, d); n != 0 {
			t.Errorf("%s: %d bytes stored before the refusal", tc.name, n)
		}
	}
	// A genuine package is stored as sent, one copy.
	d := testDevice(t, pub)
	pkg := testPackage(t, payload, priv)
	if err := d.StreamOpen(context.Background(), "", nil); err != nil {
		t.Fatal(err)
	}
	for b := pkg; len(b) > 0; b = b[min(len(b), 1000):] {
		if err := d.StreamWrite(b[:min(len(b), 1000)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.StreamFinish(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(d.path(partFile)); !bytes.Equal(got, pkg) {
		t.Errorf("package.part (%d bytes) is not the package (%d)", len(got), len(pkg))
	}
	if entries, _ := os.ReadDir(d.dir); len(entries) != 1 {
		t.Errorf("state dir holds %v, want package.part only", entries)
	}
}

// A download resumed after a restart (a new fileDevice) at any offset in
// the payload ends with the package as sent. Inside the header nothing was
// stored: the resume fails, so the module starts over.
func TestDeviceResume(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 5000)
	pkg := testPackage(t, payload, nil)
	h, err := fwpkg.ReadHeader(bytes.NewReader(pkg))
	if err != nil {
		t.Fatal(err)
	}
	hl := h.Len()
	for _, at := range []int64{0, 10, int64(hl), int64(hl) + 1, 1024, 30000, int64(len(pkg))} {
		d := testDevice(t, nil)
		if err := d.StreamOpen(context.Background(), "u", nil); err != nil {
			t.Fatal(err)
		}
		if err := d.StreamWrite(pkg[:at]); err != nil {
			t.Fatal(err)
		}
		d.closeLocked() // the process dies; a new one resumes
		d2 := &fileDevice{dir: d.dir, exe: d.exe, log: d.log}
		err := d2.StreamResume(context.Background(), "u", nil, at)
		if at > 0 && at < int64(hl) {
			if err == nil {
				t.Errorf("resume at %d, inside the header: no error", at)
			}
			continue
		}
		if err != nil {
			t.Fatalf("resume at %d: %v", at, err)
		}
		if err := d2.StreamWrite(pkg[at:]); err != nil {
			t.Fatal(err)
		}
		if err := d2.StreamFinish(); err != nil {
			t.Fatalf("resume at %d: %v", at, err)
		}
		if got, _ := os.ReadFile(d.path(partFile)); !bytes.Equal(got, pkg) {
			t.Errorf("resume at %d: package.part differs (%d bytes)", at, len(got))
		}
	}
}

// Reset with no package is not an error.
func TestDeviceResetWithoutPackage(t *testing.T) {
	if err := testDevice(t, nil).Reset(); err != nil {
		t.Fatal(err)
	}
}

// A start removes the hidden temporary files a crash during an install or
// a state save left (ours only, by name), in the state directory and
// beside the program.
func TestSettleRemovesTemporaries(t *testing.T) {
	d := testDevice(t, nil)
	ours := []string{d.path(".fwupdate.json.tmp123"), d.path(".pending.json.tmp9"), d.path(".firmware.bin.tmp77"), d.exe[:len(d.exe)-len("prog")] + ".prog.tmp4242"}
	theirs := []string{d.path(".other.tmp1"), d.path("fwupdate.json.tmp"), d.path("notes.txt")}
	for _, n := range append(append([]string{}, ours...), theirs...) {
		if err := os.WriteFile(n, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "tmp", Server: "coap://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := fwupdate.Install(c, d, fwupdate.Config{})
	if err != nil {
		t.Fatal(err)
	}
	d.settle(obj, installed{Version: "1.0"})
	for _, n := range ours {
		if _, err := os.Stat(n); err == nil {
			t.Errorf("%s not removed", n)
		}
	}
	for _, n := range theirs {
		if _, err := os.Stat(n); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
}

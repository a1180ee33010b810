package writeback_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/lwm2m-fota/lwm2m/internal/writeback"
)

// The Writer passes every byte through in order, across write-back chunk
// boundaries and from a resume offset.
func TestWritesThroughFromOffset(t *testing.T) {
	name := filepath.Join(t.TempDir(), "img")
	head := []byte("kept from an earlier run")
	if err := os.WriteFile(name, head, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := writeback.From(f, int64(len(head)))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 3*writeback.Chunk+12345)
	for i := range want {
		want[i] = byte(i * 13)
	}
	for rest := want; len(rest) > 0; {
		n := min(len(rest), 100_003) // not a divisor of Chunk
		if k, err := w.Write(rest[:n]); err != nil || k != n {
			t.Fatalf("Write = %d, %v", k, err)
		}
		rest = rest[n:]
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(head, want...)) {
		t.Fatalf("file holds %d bytes, not the %d written after the %d kept", len(got), len(want), len(head))
	}
}

// From drops what lies past the offset: the tail of a run that went
// further before it was cut short must not survive under a shorter image.
func TestFromDropsTheTail(t *testing.T) {
	name := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(name, []byte("kept|stale tail of an earlier run"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := writeback.From(f, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(name); string(got) != "kept|new" {
		t.Fatalf("file holds %q, want %q", got, "kept|new")
	}
}

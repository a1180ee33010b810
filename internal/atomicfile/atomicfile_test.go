package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// noTemp fails if a temporary file of name is left behind.
func noTemp(t *testing.T, name string) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(name), TempPattern(name)))
	if len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

func TestWriteFileReplaces(t *testing.T) {
	name := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(name, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(name, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := read(t, name); got != "new" {
		t.Errorf("content %q, want new", got)
	}
	if st, _ := os.Stat(name); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	noTemp(t, name)
}

// A fill that fails, and an Abort, leave the old content and no
// temporary file.
func TestFailureKeepsOld(t *testing.T) {
	name := filepath.Join(t.TempDir(), "pkg")
	if err := os.WriteFile(name, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(name, 0o644, func(w io.Writer) error {
		w.Write([]byte("part"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write: %v, want boom", err)
	}
	f, err := Create(name, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("part"))
	f.Abort()
	if err := f.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	if got := read(t, name); got != "old" {
		t.Errorf("content %q, want old", got)
	}
	noTemp(t, name)
}

// A rename that fails (the target is a directory) is an error, not
// ErrSyncDir, and leaves no temporary file.
func TestRenameFails(t *testing.T) {
	name := filepath.Join(t.TempDir(), "dir")
	if err := os.MkdirAll(filepath.Join(name, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(name, []byte("new"), 0o644)
	if err == nil || errors.Is(err, ErrSyncDir) {
		t.Fatalf("WriteFile over a directory: %v", err)
	}
	noTemp(t, name)
}

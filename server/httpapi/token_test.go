package httpapi

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestAPITokenFile: one token per file, private, shared by servers that
// start at once, and a broken file is replaced.
func TestAPITokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "api-token")
	var wg sync.WaitGroup
	toks := make([]string, 4)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if toks[i], err = LoadOrCreateToken(file); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, tok := range toks[1:] {
		if tok != toks[0] || len(tok) < 40 {
			t.Fatalf("tokens %q", toks)
		}
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	if got, err := ReadToken(file); err != nil || got != toks[0] {
		t.Errorf("ReadToken: %q %v", got, err)
	}
	if left, _ := os.ReadDir(filepath.Dir(file)); len(left) != 1 {
		t.Errorf("files left beside the token: %v", left)
	}

	os.Chmod(file, 0o644)
	if tok, err := LoadOrCreateToken(file); err != nil || tok != toks[0] {
		t.Errorf("reload: %q %v", tok, err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("a readable token file stays %v", st.Mode().Perm())
	}

	os.WriteFile(file, []byte("\n"), 0o600)
	if tok, err := LoadOrCreateToken(file); err != nil || tok == "" || tok == toks[0] {
		t.Errorf("empty file: %q %v", tok, err)
	}
	if _, err := ReadToken(filepath.Join(dir, "none")); err == nil {
		t.Error("ReadToken of a missing file succeeded")
	}
}

// Package atomicfile replaces files so that a crash at any moment leaves
// either the old or the whole new content, never a part: it writes a
// temporary file beside the target, fsyncs it, renames it over the
// target and fsyncs the directory (the rename is durable only then).
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrSyncDir reports that the file was replaced but its directory could
// not be synced, so the rename may not survive a crash. Not every file
// system syncs directories: a caller may take it as a warning.
var ErrSyncDir = errors.New("atomicfile: directory not synced")

// File is the new content of a file being replaced. Commit puts it in
// place; Abort drops it. After either, the File is done.
type File struct {
	f    *os.File
	name string
	done bool
}

// Create starts replacing name with a temporary file of mode perm in the
// same directory; the temporary name matches TempPattern(name).
func Create(name string, perm fs.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(name), TempPattern(name))
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{f: f, name: name}, nil
}

// TempPattern is the os.CreateTemp pattern (and filepath.Glob pattern) of
// the temporary files that replace name: hidden, beside it. A crash
// leaves them behind; a program may remove them when it starts.
func TempPattern(name string) string { return "." + filepath.Base(name) + ".tmp*" }

// Write writes to the temporary file.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// Sync makes what was written durable before Commit, for a caller that
// does more between the two.
func (f *File) Sync() error { return f.f.Sync() }

// Commit syncs and closes the temporary file, renames it over the target
// and syncs the directory. On an error before the rename the target is
// unchanged and the temporary file removed; an error wrapping ErrSyncDir
// comes after the rename.
func (f *File) Commit() error {
	if f.done {
		return os.ErrClosed
	}
	f.done = true
	err := f.f.Sync()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.f.Name(), f.name)
	}
	if err != nil {
		os.Remove(f.f.Name())
		return err
	}
	if err := SyncDir(filepath.Dir(f.name)); err != nil {
		return fmt.Errorf("%w: %w", ErrSyncDir, err)
	}
	return nil
}

// Abort drops the new content and leaves the target as it was. It does
// nothing after Commit, so it can be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.f.Close()
	os.Remove(f.f.Name())
}

// Write replaces name, of mode perm, with what fill writes.
func Write(name string, perm fs.FileMode, fill func(io.Writer) error) error {
	f, err := Create(name, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := fill(f); err != nil {
		return err
	}
	return f.Commit()
}

// WriteFile replaces name, of mode perm, with data.
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	return Write(name, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// SyncDir fsyncs the directory dir, which makes a rename or a link in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

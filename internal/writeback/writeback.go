// Package writeback starts the kernel's write-back of a file while the
// file is still being written, so that the fsync that makes it durable at
// the end has little left to do. Without it a firmware image is written
// to the page cache at network speed and then flushed all at once: for
// 256 MiB on an ordinary disk that final fsync alone takes about half a
// second, during which nothing else moves.
package writeback

import (
	"io"
	"os"
)

// Chunk is how much is written before write-back of it is started.
const Chunk = 4 << 20

// Writer writes to a file sequentially from an offset and starts the
// write-back of every Chunk written. It does not wait for the disk; the
// caller still calls f.Sync at the end.
type Writer struct {
	f       *os.File
	off     int64 // where the next Write lands
	started int64 // write-back was started for [.., started)
}

// From keeps the first off bytes of f, drops the rest, and returns a
// Writer that writes on from there: a new image at 0, a resumed one at
// the offset it had reached.
func From(f *os.File, off int64) (*Writer, error) {
	if err := f.Truncate(off); err != nil {
		return nil, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	return &Writer{f: f, off: off, started: off}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.started >= Chunk {
		// Best effort: an error here will come back from f.Sync.
		startWriteback(w.f, w.started, w.off-w.started)
		w.started = w.off
	}
	return n, err
}

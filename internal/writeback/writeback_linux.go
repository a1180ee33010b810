package writeback

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback queues the range for writing without waiting for it
// (sync_file_range(2) with SYNC_FILE_RANGE_WRITE only).
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}

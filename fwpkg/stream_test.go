package fwpkg

import (
	"crypto/sha256"
	"io"
	"runtime"
	"testing"
)

// genReaderAt is a payload of any size computed from the offset, so that a
// large image needs no memory.
type genReaderAt struct{ size int64 }

func (g genReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= g.size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := g.size - off; int64(n) > rest {
		n = int(rest)
	}
	for i := range p[:n] {
		x := uint64(off) + uint64(i)
		p[i] = byte(x ^ x>>8 ^ x>>17)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestStreamMemoryBounded packs and verifies a 64 MiB image through a pipe
// and checks that the bytes allocated on the way are a small fraction of
// the image size: the format never holds the payload in memory.
func TestStreamMemoryBounded(t *testing.T) {
	const size = 64 << 20
	pub, priv := testKey(t, 1)
	src := genReaderAt{size}
	_, want, err := Digest(io.NewSectionReader(src, 0, size))
	if err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	packErr := make(chan error, 1)
	go func() {
		_, err := Pack(pw, src, size, "big", "1", priv)
		pw.CloseWithError(err)
		packErr <- err
	}()
	d := sha256.New()
	v := NewVerifier(d, VerifyOptions{TrustedKey: pub, MaxSize: size})
	if _, err := io.Copy(v, pr); err != nil {
		t.Fatalf("copy: %v", err)
	}
	h, err := v.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-packErr; err != nil {
		t.Fatalf("Pack: %v", err)
	}

	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	if h.Size != size || h.SHA256 != want || [sha256.Size]byte(d.Sum(nil)) != want {
		t.Fatalf("header %+v does not describe the payload", h)
	}
	// io.Copy and io.Pipe use 32 KiB buffers; 4 MiB leaves room for the
	// test machinery and is still 1/16 of the image.
	const limit = 4 << 20
	if total := after.TotalAlloc - before.TotalAlloc; total > limit {
		t.Errorf("allocated %d bytes in total for a %d-byte image, want < %d", total, size, limit)
	}
	if after.HeapAlloc > before.HeapAlloc+limit {
		t.Errorf("heap grew from %d to %d bytes", before.HeapAlloc, after.HeapAlloc)
	}
	t.Logf("TotalAlloc delta %d bytes", after.TotalAlloc-before.TotalAlloc)
}

package fwpkg

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
)

// Digest reads r to its end and returns its length and SHA-256, the values
// Write needs in Header.Size and Header.SHA256.
func Digest(r io.Reader) (size int64, sum [sha256.Size]byte, err error) {
	d := sha256.New()
	size, err = io.Copy(d, r)
	if err != nil {
		return 0, sum, fmt.Errorf("fwpkg: hashing payload: %w", err)
	}
	d.Sum(sum[:0])
	return size, sum, nil
}

// Write writes a package to w: the header built from h, then the payload.
//
// The header comes before the payload and holds its length and hash, so
// h.Size and h.SHA256 must already describe payload (see [Digest], or use
// [Pack], which reads the payload twice). Write copies exactly h.Size bytes
// from payload while hashing them again, and fails with an error wrapping
// [ErrIntegrity] if payload is shorter, longer or different; w then holds a
// package that will not verify.
//
// If key is non-nil the package is signed with it; h.Signature is ignored.
// Memory use does not depend on the payload size.
func Write(w io.Writer, payload io.Reader, h Header, key ed25519.PrivateKey) error {
	_, err := write(w, payload, h, key)
	return err
}

// write is Write, and returns the header as written.
func write(w io.Writer, payload io.Reader, h Header, key ed25519.PrivateKey) (Header, error) {
	hdr, err := marshalHeader(h, key)
	if err != nil {
		return Header{}, err
	}
	h, _, _ = parseHeader(hdr)
	if _, err := w.Write(hdr); err != nil {
		return Header{}, fmt.Errorf("fwpkg: writing header: %w", err)
	}
	d := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, d), io.LimitReader(payload, h.Size))
	if err != nil {
		return Header{}, fmt.Errorf("fwpkg: writing payload: %w", err)
	}
	if n != h.Size {
		return Header{}, fmt.Errorf("%w: payload has %d bytes, header says %d", ErrIntegrity, n, h.Size)
	}
	// Reading one byte more tells a longer payload from an exact one.
	var extra [1]byte
	if m, _ := io.ReadFull(payload, extra[:]); m != 0 {
		return Header{}, fmt.Errorf("%w: payload is longer than the %d bytes the header says", ErrIntegrity, h.Size)
	}
	var sum [sha256.Size]byte
	if d.Sum(sum[:0]); sum != h.SHA256 {
		return Header{}, fmt.Errorf("%w: payload does not match the header's SHA-256", ErrIntegrity)
	}
	return h, nil
}

// Pack writes a package for the size bytes of payload to w and returns its
// header. It reads the payload twice, once to hash it and once to copy it,
// so memory use does not depend on size. If key is non-nil the package is
// signed.
func Pack(w io.Writer, payload io.ReaderAt, size int64, name, version string, key ed25519.PrivateKey) (Header, error) {
	h := Header{Name: name, Version: version}
	n, sum, err := Digest(io.NewSectionReader(payload, 0, size))
	if err != nil {
		return Header{}, err
	}
	if n != size {
		return Header{}, fmt.Errorf("fwpkg: payload has %d bytes, want %d: %w", n, size, io.ErrUnexpectedEOF)
	}
	h.Size, h.SHA256 = size, sum
	return write(w, io.NewSectionReader(payload, 0, size), h, key)
}

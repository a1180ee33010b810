// Package fwpkg reads and writes firmware packages: a small header that names
// the image, gives its length and SHA-256, and optionally carries an ed25519
// signature, followed by the image itself.
//
// The device verifies a package while it streams in (see [Verifier]), so
// memory does not grow with the image size, and a wrong key, a bad header or
// an image that is too large is rejected before any payload byte is stored.
// The errors map to the Update Result values of the LwM2M Firmware Update
// object (/5): [ErrNotPackage] to 6, [ErrIntegrity] to 5, [ErrTooLarge] to 2.
//
// The byte layout is documented in docs/PACKAGE_FORMAT.md.
package fwpkg

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"unicode/utf8"
)

// Sentinel errors. Every error from this package that is about the package's
// content wraps exactly one of them.
var (
	// ErrNotPackage: bad magic, unknown format version or signature
	// algorithm, or a malformed field. LwM2M /5 Update Result 6
	// (Unsupported package type).
	ErrNotPackage = errors.New("fwpkg: not a firmware package")
	// ErrIntegrity: header checksum or payload hash mismatch, a missing or
	// bad signature when one is required, a truncated package or trailing
	// bytes. LwM2M /5 Update Result 5 (Integrity check failure).
	ErrIntegrity = errors.New("fwpkg: integrity check failed")
	// ErrTooLarge: the header announces a payload longer than the limit.
	// LwM2M /5 Update Result 2 (Not enough flash memory).
	ErrTooLarge = errors.New("fwpkg: package too large")
)

// Magic opens every package.
const Magic = "LWM2MPKG"

// FormatVersion is the only format version this package reads and writes.
const FormatVersion = 1

// MaxFieldLen bounds Name and Version, in bytes. It matches the 0..255 range
// of the PkgName and PkgVersion resources (/5/6, /5/7).
const MaxFieldLen = 255

// Signature algorithms (header byte 9).
const (
	sigNone    = 0
	sigEd25519 = 1
)

const (
	fixedLen     = len(Magic) + 3 // magic, format version, sig alg, name length
	crcLen       = 4
	tailLen      = 8 + sha256.Size // payload length, payload hash
	maxHeaderLen = fixedLen + MaxFieldLen + 1 + MaxFieldLen + tailLen + ed25519.SignatureSize + crcLen
)

// Header describes a package.
type Header struct {
	Name    string // UTF-8, at most MaxFieldLen bytes
	Version string // UTF-8, at most MaxFieldLen bytes
	// Size is the payload length in bytes.
	Size int64
	// SHA256 is the hash of the payload.
	SHA256 [sha256.Size]byte
	// Signature is the ed25519 signature over the header bytes up to and
	// including SHA256 (see docs/PACKAGE_FORMAT.md), or nil if the package
	// is unsigned. Write ignores it and signs with its key argument.
	Signature []byte
}

// Signed reports whether the package carries a signature.
func (h Header) Signed() bool { return h.Signature != nil }

// Len is the length of h's encoding, that is the offset of the first
// payload byte in the package.
func (h Header) Len() int {
	return fixedLen + len(h.Name) + 1 + len(h.Version) + tailLen + len(h.Signature) + crcLen
}

func checkField(what, s string) error {
	if len(s) > MaxFieldLen {
		return fmt.Errorf("fwpkg: %s is %d bytes, over the limit of %d", what, len(s), MaxFieldLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("fwpkg: %s is not valid UTF-8", what)
	}
	return nil
}

// marshalHeader encodes h. If key is non-nil the header is signed with it.
func marshalHeader(h Header, key ed25519.PrivateKey) ([]byte, error) {
	if err := checkField("name", h.Name); err != nil {
		return nil, err
	}
	if err := checkField("version", h.Version); err != nil {
		return nil, err
	}
	if h.Size < 0 {
		return nil, fmt.Errorf("fwpkg: negative payload size %d", h.Size)
	}
	if key != nil && len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("fwpkg: ed25519 private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	b := make([]byte, 0, maxHeaderLen)
	b = append(b, Magic...)
	b = append(b, FormatVersion)
	if key != nil {
		b = append(b, sigEd25519)
	} else {
		b = append(b, sigNone)
	}
	b = append(b, byte(len(h.Name)))
	b = append(b, h.Name...)
	b = append(b, byte(len(h.Version)))
	b = append(b, h.Version...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Size))
	b = append(b, h.SHA256[:]...)
	if key != nil {
		// The signature covers every byte before it: magic, versions,
		// algorithm, name, version, length and payload hash.
		b = append(b, ed25519.Sign(key, b)...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// headerNeed reports how many bytes the header has, given a prefix b of it:
// the answer is final once len(b) reaches it. It fails as soon as the prefix
// cannot start a package.
func headerNeed(b []byte) (int, error) {
	if n := min(len(b), len(Magic)); !bytes.Equal(b[:n], []byte(Magic[:n])) {
		return 0, fmt.Errorf("%w: bad magic", ErrNotPackage)
	}
	if len(b) < fixedLen {
		return fixedLen, nil
	}
	if v := b[len(Magic)]; v != FormatVersion {
		return 0, fmt.Errorf("%w: unknown format version %d", ErrNotPackage, v)
	}
	sigLen := 0
	switch a := b[len(Magic)+1]; a {
	case sigNone:
	case sigEd25519:
		sigLen = ed25519.SignatureSize
	default:
		return 0, fmt.Errorf("%w: unknown signature algorithm %d", ErrNotPackage, a)
	}
	n := fixedLen + int(b[fixedLen-1]) + 1
	if len(b) < n {
		return n, nil
	}
	return n + int(b[n-1]) + tailLen + sigLen + crcLen, nil
}

// parseHeader decodes a complete header, as sized by headerNeed. It checks
// the header checksum and fields, but not the signature. It also returns the
// signed part of the header.
func parseHeader(b []byte) (h Header, signed []byte, err error) {
	body := b[:len(b)-crcLen]
	if got, want := crc32.ChecksumIEEE(body), binary.BigEndian.Uint32(b[len(body):]); got != want {
		return Header{}, nil, fmt.Errorf("%w: header checksum %08x, want %08x", ErrIntegrity, got, want)
	}
	hasSig := b[len(Magic)+1] == sigEd25519
	p := b[fixedLen-1:]
	name := p[1 : 1+int(p[0])]
	p = p[1+len(name):]
	version := p[1 : 1+int(p[0])]
	p = p[1+len(version):]
	size := binary.BigEndian.Uint64(p)
	p = p[8:]
	copy(h.SHA256[:], p)
	p = p[sha256.Size:]
	signed = b[:len(b)-len(p)]
	if hasSig {
		h.Signature = bytes.Clone(p[:ed25519.SignatureSize])
	}
	if !utf8.Valid(name) || !utf8.Valid(version) {
		return Header{}, nil, fmt.Errorf("%w: name or version is not valid UTF-8", ErrNotPackage)
	}
	if size > math.MaxInt64 {
		return Header{}, nil, fmt.Errorf("%w: payload length %d out of range", ErrTooLarge, size)
	}
	h.Name, h.Version, h.Size = string(name), string(version), int64(size)
	return h, signed, nil
}

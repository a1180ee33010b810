package fwpkg

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
)

// VerifyOptions configure a Verifier.
type VerifyOptions struct {
	// TrustedKey, if non-nil, makes a valid signature by this key
	// mandatory: unsigned packages and packages signed by another key fail
	// with ErrIntegrity. If nil, signatures are not checked.
	TrustedKey ed25519.PublicKey
	// MaxSize, if positive, is the largest payload accepted; a header that
	// announces more fails with ErrTooLarge before any payload byte is
	// forwarded.
	MaxSize int64
}

// errClosed is returned by Write after Close.
var errClosed = errors.New("fwpkg: write to closed Verifier")

// A Verifier checks a package while it streams in. It is an io.Writer that
// accepts the package in chunks of any size, parses and checks the header
// as soon as it is complete, forwards only payload bytes to the payload
// writer, and hashes them. Close reports whether the package was whole and
// genuine.
//
// Once a check fails, Write and Close return the same error and nothing more
// is forwarded. Errors about the package wrap ErrNotPackage, ErrIntegrity or
// ErrTooLarge; errors from the payload writer are wrapped and returned as they
// are. The header is checked (checksum, signature and size) before the first
// payload byte is forwarded, but the payload is only known to be good when
// Close returns nil: until then the caller must treat what it stored as
// unverified.
//
// A Verifier is not safe for concurrent use.
type Verifier struct {
	out    io.Writer
	opts   VerifyOptions
	hdr    []byte // header bytes so far, until the header is complete
	need   int    // header length as known so far
	h      Header
	inBody bool
	got    int64 // payload bytes forwarded
	sum    hash.Hash
	err    error // sticky
	closed bool
}

// NewVerifier returns a Verifier that forwards the payload to payload.
func NewVerifier(payload io.Writer, opts VerifyOptions) *Verifier {
	return &Verifier{
		out:  payload,
		opts: opts,
		hdr:  make([]byte, 0, maxHeaderLen),
		need: fixedLen,
		sum:  sha256.New(),
	}
}

// Header returns the package header once it has been received and checked,
// and false before that.
func (v *Verifier) Header() (Header, bool) {
	return v.h, v.inBody
}

// Write consumes the next bytes of the package.
func (v *Verifier) Write(p []byte) (int, error) {
	if v.closed {
		return 0, errClosed
	}
	if v.err != nil {
		return 0, v.err
	}
	n := 0
	for !v.inBody && len(p) > 0 {
		k := min(v.need-len(v.hdr), len(p))
		v.hdr = append(v.hdr, p[:k]...)
		p, n = p[k:], n+k
		if err := v.advance(); err != nil {
			v.err = err
			return n, err
		}
	}
	if len(p) == 0 {
		return n, nil
	}
	rest := v.h.Size - v.got
	trailing := int64(len(p)) > rest
	if trailing {
		p = p[:rest]
	}
	m, err := v.out.Write(p)
	v.sum.Write(p[:m])
	v.got += int64(m)
	n += m
	switch {
	case err != nil:
		v.err = fmt.Errorf("fwpkg: storing payload: %w", err)
	case m < len(p):
		v.err = fmt.Errorf("fwpkg: storing payload: %w", io.ErrShortWrite)
	case trailing:
		v.err = fmt.Errorf("%w: bytes after the %d-byte payload", ErrIntegrity, v.h.Size)
	}
	return n, v.err
}

// advance checks the header bytes received so far, and the whole header
// once it is complete.
func (v *Verifier) advance() error {
	need, err := headerNeed(v.hdr)
	if err != nil {
		return err
	}
	v.need = need
	if len(v.hdr) < need {
		return nil
	}
	h, signed, err := parseHeader(v.hdr)
	if err != nil {
		return err
	}
	if err := checkHeader(h, signed, v.opts); err != nil {
		return err
	}
	v.h, v.inBody, v.hdr = h, true, nil
	return nil
}

// checkHeader applies opts to a parsed header: signature first, since an
// unauthenticated header says nothing to be trusted, then size.
func checkHeader(h Header, signed []byte, opts VerifyOptions) error {
	if opts.TrustedKey != nil {
		if !h.Signed() {
			return fmt.Errorf("%w: package is not signed", ErrIntegrity)
		}
		if len(opts.TrustedKey) != ed25519.PublicKeySize || !ed25519.Verify(opts.TrustedKey, signed, h.Signature) {
			return fmt.Errorf("%w: bad signature", ErrIntegrity)
		}
	}
	if opts.MaxSize > 0 && h.Size > opts.MaxSize {
		return fmt.Errorf("%w: payload is %d bytes, limit %d", ErrTooLarge, h.Size, opts.MaxSize)
	}
	return nil
}

// Close ends the package and checks its length and payload hash. It returns
// the header and nil only if the package is whole and every check passed.
// It does not close the payload writer. Calling Close again returns the same
// result.
func (v *Verifier) Close() (Header, error) {
	if !v.closed {
		v.closed = true
		if v.err == nil {
			v.err = v.finish()
		}
	}
	if v.err != nil {
		return Header{}, v.err
	}
	return v.h, nil
}

func (v *Verifier) finish() error {
	if !v.inBody {
		return fmt.Errorf("%w: truncated header (%d bytes)", ErrIntegrity, len(v.hdr))
	}
	if v.got != v.h.Size {
		return fmt.Errorf("%w: truncated payload, %d of %d bytes", ErrIntegrity, v.got, v.h.Size)
	}
	var sum [sha256.Size]byte
	v.sum.Sum(sum[:0])
	if subtle.ConstantTimeCompare(sum[:], v.h.SHA256[:]) != 1 {
		return fmt.Errorf("%w: payload SHA-256 %x, header says %x", ErrIntegrity, sum, v.h.SHA256)
	}
	return nil
}

// ReadHeader reads a package header from r and leaves r at the first payload
// byte. It checks the header's structure and checksum but not the signature;
// use a Verifier for that. A header cut short fails with ErrIntegrity, and an
// r with no bytes at all with io.EOF.
func ReadHeader(r io.Reader) (Header, error) {
	b := make([]byte, 0, maxHeaderLen)
	need := fixedLen
	for len(b) < need {
		n, err := io.ReadFull(r, b[len(b):need])
		b = b[:len(b)+n]
		if n > 0 {
			// A wrong prefix is reported as such even if r ends early.
			var perr error
			if need, perr = headerNeed(b); perr != nil {
				return Header{}, perr
			}
		}
		switch {
		case err == io.EOF && len(b) == 0:
			return Header{}, io.EOF
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return Header{}, fmt.Errorf("%w: truncated header (%d bytes)", ErrIntegrity, len(b))
		case err != nil:
			return Header{}, fmt.Errorf("fwpkg: reading header: %w", err)
		}
	}
	h, _, err := parseHeader(b)
	return h, err
}

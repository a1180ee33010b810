package text

import (
	"encoding/base64"
	"fmt"
)

// Base64Stream decodes an Opaque value in plain text (standard base64,
// LwM2M 1.1 Core §7.4.1) that arrives in pieces, such as the blocks of a
// Block1 write (RFC 7959), without holding the whole: it carries the
// partial quantum (fewer than 4 characters) from one piece to the next.
// It accepts exactly what Decode accepts for an Opaque resource (strict
// base64; CR and LF ignored, as encoding/base64 does).
type Base64Stream struct {
	carry  [4]byte
	nc     int
	padded bool   // a quantum with '=' was decoded: only the end may follow
	in     []byte // carry and the next piece, without CR and LF
	out    []byte
}

// Next decodes the next piece and returns the bytes it completes. They
// stay valid until the next call.
func (s *Base64Stream) Next(piece []byte) ([]byte, error) {
	in := append(s.in[:0], s.carry[:s.nc]...)
	for _, c := range piece {
		if c != '\r' && c != '\n' {
			in = append(in, c)
		}
	}
	s.in = in
	if len(in) > 0 && s.padded {
		return nil, fmt.Errorf("%w: base64 goes on after its padding", ErrMalformed)
	}
	whole := len(in) / 4 * 4
	s.nc = copy(s.carry[:], in[whole:])
	if whole == 0 {
		return nil, nil
	}
	if n := cap(s.out); n < whole/4*3 {
		s.out = make([]byte, whole/4*3)
	}
	n, err := base64.StdEncoding.Strict().Decode(s.out[:cap(s.out)], in[:whole])
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %w", ErrMalformed, err)
	}
	s.padded = in[whole-1] == '='
	return s.out[:n], nil
}

// Close reports ErrMalformed if the text ended inside a quantum.
func (s *Base64Stream) Close() error {
	if s.nc != 0 {
		return fmt.Errorf("%w: base64 ends inside a quantum (%d characters left)", ErrMalformed, s.nc)
	}
	return nil
}

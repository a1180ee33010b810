package tlv

import (
	"encoding/binary"
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ValueStream takes the TLV form of one Opaque resource (a single
// Resource TLV, LwM2M 1.1 Core §7.4.3) that arrives in pieces, such as
// the blocks of a Block1 write (RFC 7959), and passes its value through
// without holding it: it strips the header and checks that exactly the
// declared length follows. Values are at most 16 MiB - 1 (24-bit length).
type ValueStream struct {
	id   uint16
	hdr  [6]byte // type byte, ID (1-2), length (0-3)
	nh   int
	left int // value bytes still expected, once the header is whole
	body bool
}

// NewValueStream expects the Resource TLV of resource res.
func NewValueStream(res uint16) *ValueStream { return &ValueStream{id: res} }

// headerLen is the length of the header whose type byte is t.
func headerLen(t byte) int {
	n := 2 + int(t>>3)&3
	if t&(1<<5) != 0 {
		n++
	}
	return n
}

// Next takes the next piece and returns the value bytes in it, a part
// of piece (no copy).
func (s *ValueStream) Next(piece []byte) ([]byte, error) {
	for !s.body && len(piece) > 0 {
		s.hdr[s.nh] = piece[0]
		s.nh++
		piece = piece[1:]
		if s.nh == headerLen(s.hdr[0]) {
			if err := s.parseHeader(); err != nil {
				return nil, err
			}
		}
	}
	if len(piece) > s.left {
		return nil, fmt.Errorf("%w: %d bytes after the value of resource %d", ErrMalformed, len(piece)-s.left, s.id)
	}
	s.left -= len(piece)
	return piece, nil
}

func (s *ValueStream) parseHeader() error {
	t := s.hdr[0]
	p, id := 2, uint16(s.hdr[1])
	if t&(1<<5) != 0 {
		p, id = 3, binary.BigEndian.Uint16(s.hdr[1:])
	}
	if t>>6 != kindResource || id != s.id || id > model.MaxID {
		return fmt.Errorf("%w: TLV of kind %d with ID %d, want the Resource TLV of %d", ErrMalformed, t>>6, id, s.id)
	}
	n := int(t & 7)
	if lt := int(t>>3) & 3; lt != 0 {
		n = 0
		for _, b := range s.hdr[p:s.nh] {
			n = n<<8 | int(b)
		}
	}
	s.left, s.body = n, true
	return nil
}

// Close reports ErrMalformed unless the whole entry arrived.
func (s *ValueStream) Close() error {
	if !s.body || s.left != 0 {
		return fmt.Errorf("%w: TLV of resource %d ends %d bytes short", ErrMalformed, s.id, s.left)
	}
	return nil
}

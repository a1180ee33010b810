package content

import (
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/text"
	"github.com/lwm2m-fota/lwm2m/lwm2m/tlv"
)

// ValueStream decodes the value of one Opaque resource that arrives in
// pieces (the blocks of a Block1 write) without holding it whole. Next
// returns the value bytes a piece holds, valid until the next call; Close
// reports a value cut short.
type ValueStream interface {
	Next(piece []byte) ([]byte, error)
	Close() error
}

// NewValueStream returns the streaming decoder of format f for the value
// of the Opaque resource res: nil for application/octet-stream, whose
// bytes are the value; base64 for text/plain (LwM2M 1.1 Core §7.4.1);
// the single Resource TLV of res for TLV (§7.4.3). Other formats, or an
// encoded value of a resource of another type, are ErrUnsupported. What
// the stream accepts is what Decode accepts as one value at res.
func NewValueStream(f Format, res model.Path, t model.Type) (ValueStream, error) {
	f = f.canonical()
	if f == Opaque {
		return nil, nil
	}
	if res.Len() != 3 || t != model.TypeOpaque {
		return nil, fmt.Errorf("%w: %s of %s cannot be streamed: not an Opaque resource (%s)", ErrUnsupported, f, res, t)
	}
	switch f {
	case TextPlain:
		return &text.Base64Stream{}, nil
	case TLV:
		return tlv.NewValueStream(res.Resource()), nil
	}
	return nil, fmt.Errorf("%w: %s cannot be streamed", ErrUnsupported, f)
}

package server

import (
	"fmt"
	"strconv"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

// AnyFormat asks Read and Observe to send no Accept option and take
// whatever format the device prefers.
const AnyFormat content.Format = 0xFFFF

// ParseFormat parses a content format name as the API and the command
// line take it: text, opaque, link, tlv, senml-json, senml-cbor, or a number.
func ParseFormat(s string) (content.Format, error) {
	switch s {
	case "", "any":
		return AnyFormat, nil
	case "text":
		return content.TextPlain, nil
	case "opaque":
		return content.Opaque, nil
	case "link":
		return content.LinkFormat, nil
	case "tlv":
		return content.TLV, nil
	case "senml-json", "json":
		return content.SenMLJSON, nil
	case "senml-cbor", "cbor":
		return content.SenMLCBOR, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("server: unknown content format %q", s)
	}
	return content.Format(n), nil
}

// Package content dispatches LwM2M payloads to the codec of their CoAP
// Content-Format (LwM2M 1.1 Core §7.4; RFC 7252 §12.3 registry).
//
// The client core calls Encode for Read and Observe answers and Decode
// for Write and Create requests. An error wrapping ErrUnsupported means
// the format cannot serve the request (answer 4.06 Not Acceptable for a
// read, 4.15 Unsupported Content-Format for a write); any other error is
// a bad payload (4.00 Bad Request).
package content

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
	"github.com/lwm2m-fota/lwm2m/lwm2m/text"
	"github.com/lwm2m-fota/lwm2m/lwm2m/tlv"
)

// ErrUnsupported reports a content format this package does not handle,
// or one that cannot carry the records or target of a request.
var ErrUnsupported = errors.New("content: unsupported content format")

// Format is a CoAP Content-Format number.
type Format uint16

// Content formats that LwM2M 1.1 uses (LwM2M 1.1 Core Table 7.4-1).
const (
	TextPlain  Format = 0     // text/plain;charset=utf-8
	LinkFormat Format = 40    // application/link-format
	Opaque     Format = 42    // application/octet-stream
	SenMLJSON  Format = 110   // application/senml+json
	SenMLCBOR  Format = 112   // application/senml+cbor
	TLV        Format = 11542 // application/vnd.oma.lwm2m+tlv
	LwM2MJSON  Format = 11543 // application/vnd.oma.lwm2m+json (LwM2M 1.0; recognised, not supported)

	// The numbers of the LwM2M 1.0 drafts, which some servers still send
	// (lwm2m-node-lib writes 1541 by default). They mean the same formats.
	LegacyText Format = 1541
	LegacyTLV  Format = 1542
	LegacyJSON Format = 1543
)

// canonical maps a draft number to its registered one.
func (f Format) canonical() Format {
	switch f {
	case LegacyText:
		return TextPlain
	case LegacyTLV:
		return TLV
	case LegacyJSON:
		return LwM2MJSON
	}
	return f
}

// String returns the media type of f, or "Format(n)" for one we do not know.
func (f Format) String() string {
	switch f.canonical() {
	case TextPlain:
		return "text/plain"
	case LinkFormat:
		return "application/link-format"
	case Opaque:
		return "application/octet-stream"
	case SenMLJSON:
		return "application/senml+json"
	case SenMLCBOR:
		return "application/senml+cbor"
	case TLV:
		return "application/vnd.oma.lwm2m+tlv"
	case LwM2MJSON:
		return "application/vnd.oma.lwm2m+json"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Supported reports whether Encode and Decode handle f. Link format is
// not among them: Discover and Register use package corelink directly.
func (f Format) Supported() bool {
	switch f.canonical() {
	case TextPlain, Opaque, SenMLJSON, SenMLCBOR, TLV:
		return true
	}
	return false
}

// Multi reports whether f can carry several records (TLV and SenML).
func Multi(f Format) bool {
	switch f.canonical() {
	case TLV, SenMLJSON, SenMLCBOR:
		return true
	}
	return false
}

// Encode serialises recs, whose paths are absolute and lie within base,
// in format f. Text and opaque carry exactly one record at base; opaque
// only an Opaque value, whose bytes are returned without a copy.
func Encode(f Format, base model.Path, recs []model.Record) ([]byte, error) {
	f = f.canonical()
	switch f {
	case TLV:
		return tlv.Encode(base, recs)
	case SenMLJSON:
		return senml.EncodeJSON(base, recs)
	case SenMLCBOR:
		return senml.EncodeCBOR(base, recs)
	case TextPlain, Opaque:
		if len(recs) != 1 || recs[0].Path != base {
			return nil, fmt.Errorf("%w: %s carries one value at %s, not %d records", ErrUnsupported, f, base, len(recs))
		}
		v := recs[0].Value
		if f == Opaque {
			if v.Type != model.TypeOpaque {
				return nil, fmt.Errorf("%w: %s cannot carry a %s value", ErrUnsupported, f, v.Type)
			}
			return v.Bytes, nil
		}
		if v.Type == model.TypeNone {
			return nil, fmt.Errorf("%w: %s has no value", model.ErrType, base)
		}
		return text.Encode(v), nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupported, f)
}

// Decode parses data, addressed to base, in format f, and returns records
// with absolute paths. Types come from types; see the codec packages for
// how each treats a resource it does not know. For text, such a value
// comes back as a String; for opaque, as Opaque. Text and opaque need a
// resource or resource-instance base, and opaque an Opaque (or unknown)
// resource; anything else is ErrUnsupported.
func Decode(f Format, base model.Path, data []byte, types model.TypeResolver) ([]model.Record, error) {
	f = f.canonical()
	switch f {
	case TLV:
		return tlv.Decode(base, data, types)
	case SenMLJSON:
		return senml.DecodeJSON(base, data, types)
	case SenMLCBOR:
		return senml.DecodeCBOR(base, data, types)
	case TextPlain, Opaque:
		if base.Len() < 3 {
			return nil, fmt.Errorf("%w: %s needs a resource path, not %s", ErrUnsupported, f, base)
		}
		t, ok := model.TypeNone, false
		if types != nil {
			t, ok = types(base.Truncate(3))
		}
		if f == Opaque {
			if ok && t != model.TypeOpaque {
				return nil, fmt.Errorf("%w: %s cannot carry a %s value", ErrUnsupported, f, t)
			}
			return []model.Record{{Path: base, Value: model.Opaque(append([]byte{}, data...))}}, nil
		}
		if !ok || t == model.TypeNone {
			t = model.TypeString
		}
		v, err := text.Decode(data, t)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", base, err)
		}
		return []model.Record{{Path: base, Value: v}}, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupported, f)
}

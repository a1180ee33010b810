package senml

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// EncodeJSON serialises recs, whose paths are absolute and lie within
// base, as a SenML JSON array (Content-Format 110).
func EncodeJSON(base model.Path, recs []model.Record) ([]byte, error) {
	ns, err := names(base, recs)
	if err != nil {
		return nil, err
	}
	b := []byte{'['}
	for i, r := range ns {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		sep := false
		field := func(k string) {
			if sep {
				b = append(b, ',')
			}
			sep = true
			b = append(b, '"')
			b = append(b, k...)
			b = append(b, '"', ':')
		}
		if r.bn != "" {
			field("bn")
			b = appendJSONString(b, r.bn)
		}
		if r.n != "" {
			field("n")
			b = appendJSONString(b, r.n)
		}
		v := r.v
		switch v.Type {
		case model.TypeInteger, model.TypeTime:
			field("v")
			b = strconv.AppendInt(b, v.Int, 10)
		case model.TypeUnsigned:
			field("v")
			b = strconv.AppendUint(b, v.Uint, 10)
		case model.TypeFloat:
			if math.IsNaN(v.Float) || math.IsInf(v.Float, 0) {
				return nil, fmt.Errorf("%w: JSON cannot carry %v", model.ErrType, v.Float)
			}
			field("v")
			n := len(b)
			b = strconv.AppendFloat(b, v.Float, 'g', -1, 64)
			// Keep a float recognisable as one, so that a decoder that
			// does not know the resource does not take it for an integer.
			if !strings.ContainsAny(string(b[n:]), ".e") {
				b = append(b, '.', '0')
			}
		case model.TypeBoolean:
			field("vb")
			b = strconv.AppendBool(b, v.Bool)
		case model.TypeString, model.TypeCorelnk:
			if !utf8.ValidString(v.Str) {
				return nil, fmt.Errorf("%w: %s is not UTF-8", model.ErrType, v.Type)
			}
			field("vs")
			b = appendJSONString(b, v.Str)
		case model.TypeOpaque:
			field("vd")
			b = append(b, '"')
			b = base64.RawURLEncoding.AppendEncode(b, v.Bytes)
			b = append(b, '"')
		case model.TypeObjlnk:
			field("vlo")
			b = appendJSONString(b, v.Link.String())
		default:
			return nil, fmt.Errorf("%w: cannot encode a %s value", model.ErrType, v.Type)
		}
		b = append(b, '}')
	}
	return append(b, ']'), nil
}

// appendJSONString quotes s for JSON without the HTML escaping of
// encoding/json, which would turn a Corelnk "<" into "\u003c".
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// DecodeJSON parses a SenML JSON payload addressed to base. Every record's
// name must resolve to a resource or resource instance within base.
// Numbers take the type that types gives for the resource (converted with
// model.Value.Convert); for an unknown resource a number stays an Integer
// if it is integral and fits int64, else Unsigned if it fits uint64, else
// Float.
func DecodeJSON(base model.Path, data []byte, types model.TypeResolver) ([]model.Record, error) {
	if err := checkJSONDepth(data, 2); err != nil {
		return nil, err
	}
	// json.Unmarshal takes "null" for an empty array; SenML does not.
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '[' {
		return nil, fmt.Errorf("%w: not a JSON array", ErrMalformed)
	}
	var objs []map[string]json.RawMessage
	if err := json.Unmarshal(data, &objs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(objs) > MaxRecords {
		return nil, fmt.Errorf("%w: more than %d records", ErrMalformed, MaxRecords)
	}
	raws := make([]rawRecord, len(objs))
	for i, o := range objs {
		if err := raws[i].fromJSON(o); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
	}
	return resolve(base, raws, types)
}

func (r *rawRecord) fromJSON(o map[string]json.RawMessage) error {
	for k, raw := range o {
		var err error
		switch k {
		case "bn":
			r.bn, err = jsonString(k, raw)
			r.hasBN = true
		case "n":
			r.n, err = jsonString(k, raw)
		case "v":
			var v model.Value
			if v, err = jsonNumber(raw); err == nil {
				err = r.setVal(v)
			}
		case "vs":
			var s string
			if s, err = jsonString(k, raw); err == nil {
				err = r.setVal(model.String(s))
			}
		case "vb":
			switch string(raw) {
			case "true":
				err = r.setVal(model.Bool(true))
			case "false":
				err = r.setVal(model.Bool(false))
			default:
				err = fmt.Errorf("%w: vb is not a boolean", ErrMalformed)
			}
		case "vd":
			var s string
			if s, err = jsonString(k, raw); err == nil {
				// RFC 8428 §5: base64url; LwM2M omits the padding, but
				// accept it too.
				var b []byte
				if b, err = base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(s, "=")); err != nil {
					err = fmt.Errorf("%w: vd: %w", ErrMalformed, err)
				} else {
					err = r.setVal(model.Opaque(b))
				}
			}
		case "vlo":
			var s string
			if s, err = jsonString(k, raw); err == nil {
				var l model.ObjLink
				if l, err = model.ParseObjLink(s); err != nil {
					err = fmt.Errorf("%w: vlo: %w", ErrMalformed, err)
				} else {
					err = r.setVal(model.Value{Type: model.TypeObjlnk, Link: l})
				}
			}
		case "bt", "t":
			_, err = jsonNumber(raw)
		case "bv", "bs", "s":
			err = fmt.Errorf("%w: field %q is not supported", ErrMalformed, k)
		default:
			if strings.HasSuffix(k, "_") {
				err = fmt.Errorf("%w: must-understand field %q", ErrMalformed, k)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func jsonString(k string, raw json.RawMessage) (string, error) {
	var s string
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("%w: %s is not a string", ErrMalformed, k)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrMalformed, k, err)
	}
	return s, nil
}

// jsonNumber parses a JSON number into the narrowest lossless model type.
func jsonNumber(raw json.RawMessage) (model.Value, error) {
	s := string(raw)
	if len(s) == 0 || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return model.Value{}, fmt.Errorf("%w: v is not a number", ErrMalformed)
	}
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return model.Int(i), nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return model.Uint(u), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return model.Value{}, fmt.Errorf("%w: number %s: %w", ErrMalformed, s, err)
	}
	return model.Float(f), nil
}

// checkJSONDepth rejects arrays and objects nested deeper than max before
// the standard decoder walks them: SenML is an array of flat objects.
func checkJSONDepth(data []byte, max int) error {
	depth := 0
	inStr, esc := false, false
	for _, c := range data {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '[' || c == '{':
			depth++
			if depth > max {
				return fmt.Errorf("%w: nested deeper than %d", ErrMalformed, max)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

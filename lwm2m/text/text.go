// Package text implements the LwM2M plain-text content format (CoAP
// Content-Format 0, LwM2M 1.1 Core §7.4.1): one resource value as UTF-8.
package text

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrMalformed reports a payload that is not a valid text form of the
// requested type.
var ErrMalformed = errors.New("text: malformed payload")

// Encode returns the plain-text form of v: strings as they are, integers,
// unsigned integers and times in decimal, floats in shortest decimal ('g'),
// booleans as "0" or "1", object links as "3:0" and opaque values in
// standard base64 (LwM2M 1.1 Core §7.4.1). TypeNone gives an empty payload.
func Encode(v model.Value) []byte {
	switch v.Type {
	case model.TypeOpaque:
		return base64.StdEncoding.AppendEncode(nil, v.Bytes)
	case model.TypeFloat:
		return strconv.AppendFloat(nil, v.Float, 'g', -1, 64)
	}
	return []byte(v.String())
}

// Decode parses data as a value of type t. Numbers must be plain decimal
// with no surrounding space; floats also accept the "NaN", "+Inf" and
// "-Inf" that Encode writes. TypeNone accepts only an empty payload.
func Decode(data []byte, t model.Type) (model.Value, error) {
	s := string(data)
	bad := func() (model.Value, error) {
		return model.Value{}, fmt.Errorf("%w: %q is not a %s", ErrMalformed, truncate(s), t)
	}
	switch t {
	case model.TypeNone:
		if len(data) != 0 {
			return bad()
		}
		return model.Value{}, nil
	case model.TypeString, model.TypeCorelnk:
		if !utf8.Valid(data) {
			return model.Value{}, fmt.Errorf("%w: %s is not UTF-8", ErrMalformed, t)
		}
		return model.Value{Type: t, Str: s}, nil
	case model.TypeInteger, model.TypeTime:
		if !isDecimal(s, false) {
			return bad()
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return bad()
		}
		return model.Value{Type: t, Int: i}, nil
	case model.TypeUnsigned:
		if !isDecimal(s, false) || s[0] == '-' || s[0] == '+' {
			return bad()
		}
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return bad()
		}
		return model.Uint(u), nil
	case model.TypeFloat:
		if !isDecimal(s, true) && s != "NaN" && s != "+Inf" && s != "-Inf" {
			return bad()
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return bad()
		}
		return model.Float(f), nil
	case model.TypeBoolean:
		switch s {
		case "0":
			return model.Bool(false), nil
		case "1":
			return model.Bool(true), nil
		}
		return bad()
	case model.TypeOpaque:
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return bad()
		}
		return model.Opaque(b), nil
	case model.TypeObjlnk:
		l, err := model.ParseObjLink(s)
		if err != nil || l.String() != s {
			return bad()
		}
		return model.Value{Type: model.TypeObjlnk, Link: l}, nil
	}
	return model.Value{}, fmt.Errorf("%w: unknown type %s", ErrMalformed, t)
}

// isDecimal reports whether s is [+-]digits, or with frac also
// [+-]digits[.digits][(e|E)[+-]digits] (with digits on at least one side
// of the point). It keeps out what strconv also takes: hex, underscores,
// "inf" and spaces.
func isDecimal(s string, frac bool) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	n := digits()
	if frac {
		if i < len(s) && s[i] == '.' {
			i++
			n += digits()
		}
		if n > 0 && i < len(s) && (s[i] == 'e' || s[i] == 'E') {
			i++
			if i < len(s) && (s[i] == '+' || s[i] == '-') {
				i++
			}
			if digits() == 0 {
				return false
			}
		}
	}
	return n > 0 && i == len(s)
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

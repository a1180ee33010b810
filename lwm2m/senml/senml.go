// Package senml implements the SenML JSON (CoAP Content-Format 110) and
// SenML CBOR (112) content formats of RFC 8428, as LwM2M 1.1 Core §7.4.4
// and §7.4.5 profile them.
//
// Names: the base name bn and the name n concatenate to a path such as
// "/3/0/7/1". Values: v (number), vs (string, also Corelnk), vb (boolean),
// vd (opaque: base64url without padding in JSON, a byte string in CBOR) and
// vlo (object link "3:0").
//
// Time: bt and t are accepted and ignored, since model.Record carries no
// timestamp; LwM2M reads and writes do not use them. The base value and
// sum fields (bv, bs, s) would change a record's value and are rejected, as
// are fields whose name ends in "_" (must-understand, RFC 8428 §4.4). Other
// unknown fields are ignored.
package senml

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrMalformed reports a payload that is not valid SenML, breaks the LwM2M
// profile, or names a path outside the request's base path.
var ErrMalformed = errors.New("senml: malformed payload")

// MaxRecords caps the records one payload may carry.
const MaxRecords = 65536

// rawRecord is one SenML record as read from either encoding, before names
// are resolved. val holds a number as Integer, Unsigned or Float, vs as
// String, vb as Boolean, vd as Opaque and vlo as Objlnk.
type rawRecord struct {
	bn, n  string
	hasBN  bool
	val    model.Value
	hasVal bool
}

// setVal records a value field, refusing a second one.
func (r *rawRecord) setVal(v model.Value) error {
	if r.hasVal {
		return fmt.Errorf("%w: record has more than one value field", ErrMalformed)
	}
	r.val, r.hasVal = v, true
	return nil
}

// resolve turns raw records into absolute records within base.
func resolve(base model.Path, raws []rawRecord, types model.TypeResolver) ([]model.Record, error) {
	if len(raws) > MaxRecords {
		return nil, fmt.Errorf("%w: more than %d records", ErrMalformed, MaxRecords)
	}
	out := make([]model.Record, 0, len(raws))
	seen := make(map[model.Path]struct{}, len(raws))
	bn := ""
	for i, r := range raws {
		if r.hasBN {
			bn = r.bn
		}
		name := bn + r.n
		p, err := model.ParsePath(name)
		if err != nil || !strings.HasPrefix(name, "/") {
			return nil, fmt.Errorf("%w: record %d: name %q is not an LwM2M path", ErrMalformed, i, name)
		}
		if p.Len() < 3 {
			return nil, fmt.Errorf("%w: record %d: %s is not a resource", ErrMalformed, i, p)
		}
		if !p.Within(base) {
			return nil, fmt.Errorf("%w: record %d: %s lies outside %s", ErrMalformed, i, p, base)
		}
		if _, dup := seen[p]; dup {
			return nil, fmt.Errorf("%w: %s appears twice", ErrMalformed, p)
		}
		seen[p] = struct{}{}
		if !r.hasVal {
			return nil, fmt.Errorf("%w: %s has no value", ErrMalformed, p)
		}
		v := r.val
		if types != nil {
			if t, ok := types(p.Truncate(3)); ok && t != model.TypeNone {
				if v, err = v.Convert(t); err != nil {
					return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, p, err)
				}
			}
		}
		out = append(out, model.Record{Path: p, Value: v})
	}
	return out, nil
}

// named is a record ready to encode: its bn (first record only) and n.
type named struct {
	bn, n string
	v     model.Value
}

// names computes bn and n for each record: the first record carries
// bn = base + "/" and names are relative to it (LwM2M 1.1 Core §7.4.4). A
// single record at base carries bn = base and no n; at the root there is
// no bn and names are absolute.
func names(base model.Path, recs []model.Record) ([]named, error) {
	out := make([]named, len(recs))
	seen := make(map[model.Path]struct{}, len(recs))
	for i, r := range recs {
		if r.Path.Len() < 3 {
			return nil, fmt.Errorf("senml: record %s is not a resource", r.Path)
		}
		if !r.Path.Within(base) {
			return nil, fmt.Errorf("senml: record %s outside %s", r.Path, base)
		}
		if _, dup := seen[r.Path]; dup {
			return nil, fmt.Errorf("senml: duplicate record %s", r.Path)
		}
		seen[r.Path] = struct{}{}
		if r.Value.Type == model.TypeNone {
			return nil, fmt.Errorf("%w: %s has no value", model.ErrType, r.Path)
		}
		out[i].v = r.Value
		switch {
		case base.Len() == 0:
			out[i].n = r.Path.String()
		case len(recs) == 1 && r.Path == base:
			out[i].bn = base.String()
		default:
			if i == 0 {
				out[i].bn = base.String() + "/"
			}
			out[i].n = strings.Join(r.Path.Segments()[base.Len():], "/")
		}
	}
	return out, nil
}

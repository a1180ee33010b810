package senml

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// SenML CBOR labels (RFC 8428 §6, Table 4); vlo is a text label
// (LwM2M 1.1 Core §7.4.5).
const (
	labelBver = -1
	labelBN   = -2
	labelBT   = -3
	labelBU   = -4
	labelBV   = -5
	labelBS   = -6
	labelN    = 0
	labelU    = 1
	labelV    = 2
	labelVS   = 3
	labelVB   = 4
	labelS    = 5
	labelT    = 6
	labelUT   = 7
	labelVD   = 8
	labelVLO  = "vlo"
)

// decMode bounds what a hostile payload can make the decoder build: an
// array of maps of scalars needs three levels, and the library's minimum
// is four.
var decMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  4,
		MaxArrayElements: MaxRecords,
		MaxMapPairs:      64,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

var encMode = func() cbor.EncMode {
	m, err := cbor.EncOptions{ShortestFloat: cbor.ShortestFloat16}.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// cborRecord is the wire shape of an encoded record; fields appear in this
// order, as in the LwM2M examples.
type cborRecord struct {
	BN  string  `cbor:"-2,keyasint,omitempty"`
	N   string  `cbor:"0,keyasint,omitempty"`
	V   any     `cbor:"2,keyasint,omitempty"`
	VS  *string `cbor:"3,keyasint,omitempty"`
	VB  *bool   `cbor:"4,keyasint,omitempty"`
	VD  *[]byte `cbor:"8,keyasint,omitempty"`
	VLO *string `cbor:"vlo,omitempty"`
}

// EncodeCBOR serialises recs, whose paths are absolute and lie within
// base, as a SenML CBOR array (Content-Format 112).
func EncodeCBOR(base model.Path, recs []model.Record) ([]byte, error) {
	ns, err := names(base, recs)
	if err != nil {
		return nil, err
	}
	out := make([]cborRecord, len(ns))
	for i, r := range ns {
		c := &out[i]
		c.BN, c.N = r.bn, r.n
		v := r.v
		switch v.Type {
		case model.TypeInteger, model.TypeTime:
			c.V = v.Int
		case model.TypeUnsigned:
			c.V = v.Uint
		case model.TypeFloat:
			c.V = v.Float
		case model.TypeBoolean:
			c.VB = &v.Bool
		case model.TypeString, model.TypeCorelnk:
			if !utf8.ValidString(v.Str) {
				return nil, fmt.Errorf("%w: %s is not UTF-8", model.ErrType, v.Type)
			}
			c.VS = &v.Str
		case model.TypeOpaque:
			b := v.Bytes
			if b == nil {
				b = []byte{}
			}
			c.VD = &b
		case model.TypeObjlnk:
			s := v.Link.String()
			c.VLO = &s
		default:
			return nil, fmt.Errorf("%w: cannot encode a %s value", model.ErrType, v.Type)
		}
	}
	b, err := encMode.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("senml: %w", err)
	}
	return b, nil
}

// DecodeCBOR parses a SenML CBOR payload addressed to base, with the same
// rules as DecodeJSON.
func DecodeCBOR(base model.Path, data []byte, types model.TypeResolver) ([]model.Record, error) {
	// The decoder takes null or undefined for an empty array; SenML does not.
	if len(data) == 0 || data[0]>>5 != 4 {
		return nil, fmt.Errorf("%w: not a CBOR array", ErrMalformed)
	}
	var objs []map[any]any
	if err := decMode.Unmarshal(data, &objs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	raws := make([]rawRecord, len(objs))
	for i, o := range objs {
		if err := raws[i].fromCBOR(o); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
	}
	return resolve(base, raws, types)
}

func (r *rawRecord) fromCBOR(o map[any]any) error {
	for k, val := range o {
		var label int64
		switch k := k.(type) {
		case uint64:
			if k > math.MaxInt64 {
				continue
			}
			label = int64(k)
		case int64:
			label = k
		case string:
			if k == labelVLO {
				s, ok := val.(string)
				if !ok {
					return fmt.Errorf("%w: vlo is not a string", ErrMalformed)
				}
				l, err := model.ParseObjLink(s)
				if err != nil {
					return fmt.Errorf("%w: vlo: %w", ErrMalformed, err)
				}
				if err := r.setVal(model.Value{Type: model.TypeObjlnk, Link: l}); err != nil {
					return err
				}
			} else if strings.HasSuffix(k, "_") {
				return fmt.Errorf("%w: must-understand label %q", ErrMalformed, k)
			}
			continue
		default:
			continue
		}
		var err error
		switch label {
		case labelBN:
			r.bn, err = cborString("bn", val)
			r.hasBN = true
		case labelN:
			r.n, err = cborString("n", val)
		case labelV:
			var v model.Value
			if v, err = cborNumber(val); err == nil {
				err = r.setVal(v)
			}
		case labelVS:
			var s string
			if s, err = cborString("vs", val); err == nil {
				err = r.setVal(model.String(s))
			}
		case labelVB:
			b, ok := val.(bool)
			if !ok {
				return fmt.Errorf("%w: vb is not a boolean", ErrMalformed)
			}
			err = r.setVal(model.Bool(b))
		case labelVD:
			b, ok := val.([]byte)
			if !ok {
				return fmt.Errorf("%w: vd is not a byte string", ErrMalformed)
			}
			err = r.setVal(model.Opaque(b))
		case labelBT, labelT:
			_, err = cborNumber(val)
		case labelBV, labelBS, labelS:
			err = fmt.Errorf("%w: label %d is not supported", ErrMalformed, label)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func cborString(k string, val any) (string, error) {
	s, ok := val.(string)
	if !ok {
		return "", fmt.Errorf("%w: %s is not a text string", ErrMalformed, k)
	}
	return s, nil
}

func cborNumber(val any) (model.Value, error) {
	switch n := val.(type) {
	case uint64:
		if n <= math.MaxInt64 {
			return model.Int(int64(n)), nil
		}
		return model.Uint(n), nil
	case int64:
		return model.Int(n), nil
	case float64:
		return model.Float(n), nil
	}
	return model.Value{}, fmt.Errorf("%w: %T is not a number", ErrMalformed, val)
}

// Package tlv implements the OMA-TLV content format (CoAP Content-Format
// 11542, LwM2M 1.1 Core §7.4.3).
//
// A TLV payload is a sequence of entries, each one of four kinds: Object
// Instance, Resource, Multiple Resource and Resource Instance. The kinds nest
// only as the data model does (an object instance holds resources, a
// multiple resource holds resource instances), so the nesting depth is
// bounded by the format itself. TLV carries no types on the wire: the
// decoder asks a model.TypeResolver.
package tlv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrMalformed reports a TLV payload that breaks the format: truncated
// headers, lengths that overrun the payload, entries nested where the data
// model does not allow them, duplicates, or values of the wrong size.
var ErrMalformed = errors.New("tlv: malformed payload")

// ErrNoInstance reports a payload decoded against an object path (/O) whose
// top level holds Resource TLVs rather than Object Instance TLVs. LwM2M 1.0
// lets a Create request omit the instance; the caller then picks an
// instance ID and decodes again against /O/I.
var ErrNoInstance = errors.New("tlv: payload has no object instance")

// MaxRecords caps the number of records one payload may decode to, so that
// a small payload of empty entries cannot make the decoder allocate without
// bound.
const MaxRecords = 65536

// maxLength is the largest value a 24-bit length field can hold (§7.4.3).
const maxLength = 1<<24 - 1

// Entry kinds: bits 7-6 of the type byte (LwM2M 1.1 Core, Table 7.4.3-1).
const (
	kindObjectInstance   = 0b00
	kindResourceInstance = 0b01
	kindMultipleResource = 0b10
	kindResource         = 0b11
)

// level returns the path length that an entry of kind k stands for.
func level(k byte) int {
	switch k {
	case kindObjectInstance:
		return 2
	case kindMultipleResource, kindResource:
		return 3
	}
	return 4
}

// Encode serialises recs, whose paths are absolute and lie within base.
//
// The shape follows base: an object (/3) gives Object Instance TLVs; an
// instance (/3/0) gives Resource TLVs, with 4-level records gathered into
// Multiple Resource TLVs; a resource gives a single Resource TLV (one record
// at base) or a Multiple Resource TLV (records one level below it); a
// resource instance gives one Resource Instance TLV. Entries keep the order
// in which their first record appears. The root path cannot be encoded,
// because TLV has no object level. A multiple resource without instances
// cannot be expressed by records and is simply absent.
func Encode(base model.Path, recs []model.Record) ([]byte, error) {
	if base.Len() == 0 {
		return nil, errors.New("tlv: cannot encode at the root path")
	}
	seen := make(map[model.Path]struct{}, len(recs))
	for _, r := range recs {
		if !r.Path.Within(base) {
			return nil, fmt.Errorf("tlv: record %s outside %s", r.Path, base)
		}
		if r.Path.Len() < 3 {
			return nil, fmt.Errorf("tlv: record %s is not a resource", r.Path)
		}
		if _, dup := seen[r.Path]; dup {
			return nil, fmt.Errorf("tlv: duplicate record %s", r.Path)
		}
		seen[r.Path] = struct{}{}
	}
	switch base.Len() {
	case 1:
		var out []byte
		for _, g := range group(recs, 1) {
			body, err := encodeResources(g.recs)
			if err != nil {
				return nil, err
			}
			if out, err = appendEntry(out, kindObjectInstance, g.id, body); err != nil {
				return nil, err
			}
		}
		return out, nil
	case 2:
		return encodeResources(recs)
	case 3:
		if len(recs) == 1 && recs[0].Path == base {
			return encodeLeaf(nil, kindResource, base.Resource(), recs[0])
		}
		if len(recs) == 0 {
			return []byte{}, nil
		}
		return encodeMultiple(nil, base.Resource(), recs)
	default:
		if len(recs) == 0 {
			return []byte{}, nil
		}
		if len(recs) != 1 {
			return nil, fmt.Errorf("tlv: resource instance %s takes one record, got %d", base, len(recs))
		}
		return encodeLeaf(nil, kindResourceInstance, base.ResourceInstance(), recs[0])
	}
}

type recGroup struct {
	id   uint16
	recs []model.Record
}

// group splits recs by the path level i, in order of first appearance.
func group(recs []model.Record, i int) []recGroup {
	var gs []recGroup
	idx := make(map[uint16]int)
	for _, r := range recs {
		id := r.Path.ID(i)
		n, ok := idx[id]
		if !ok {
			n = len(gs)
			idx[id] = n
			gs = append(gs, recGroup{id: id})
		}
		gs[n].recs = append(gs[n].recs, r)
	}
	return gs
}

// encodeResources writes the Resource and Multiple Resource TLVs of one
// object instance.
func encodeResources(recs []model.Record) ([]byte, error) {
	out := []byte{}
	var err error
	for _, g := range group(recs, 2) {
		if len(g.recs) == 1 && g.recs[0].Path.Len() == 3 {
			out, err = encodeLeaf(out, kindResource, g.id, g.recs[0])
		} else {
			out, err = encodeMultiple(out, g.id, g.recs)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func encodeMultiple(out []byte, id uint16, recs []model.Record) ([]byte, error) {
	var body []byte
	for _, r := range recs {
		if r.Path.Len() != 4 {
			return nil, fmt.Errorf("tlv: %s mixes a single value with resource instances", r.Path.Truncate(3))
		}
		var err error
		if body, err = encodeLeaf(body, kindResourceInstance, r.Path.ResourceInstance(), r); err != nil {
			return nil, err
		}
	}
	return appendEntry(out, kindMultipleResource, id, body)
}

func encodeLeaf(out []byte, kind byte, id uint16, r model.Record) ([]byte, error) {
	v, err := EncodeValue(r.Value)
	if err != nil {
		return nil, fmt.Errorf("tlv: %s: %w", r.Path, err)
	}
	return appendEntry(out, kind, id, v)
}

// appendEntry appends one TLV header and its value (§7.4.3, Table 7.4.3-1).
func appendEntry(out []byte, kind byte, id uint16, value []byte) ([]byte, error) {
	n := len(value)
	if n > maxLength {
		return nil, fmt.Errorf("tlv: value of %d bytes exceeds the 24-bit length field", n)
	}
	t := kind << 6
	if id > 0xff {
		t |= 1 << 5
	}
	switch {
	case n < 8:
		t |= byte(n)
	case n <= 0xff:
		t |= 1 << 3
	case n <= 0xffff:
		t |= 2 << 3
	default:
		t |= 3 << 3
	}
	out = append(out, t)
	if id > 0xff {
		out = append(out, byte(id>>8))
	}
	out = append(out, byte(id))
	switch {
	case n < 8:
	case n <= 0xff:
		out = append(out, byte(n))
	case n <= 0xffff:
		out = append(out, byte(n>>8), byte(n))
	default:
		out = append(out, byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, value...), nil
}

// EncodeValue returns the TLV value field for v (§7.4.3, Table 7.4.3-2):
// integers in the shortest of 1, 2, 4 or 8 bytes, floats in 4 bytes when
// that loses nothing, booleans in one byte, object links in 4 bytes.
func EncodeValue(v model.Value) ([]byte, error) {
	switch v.Type {
	case model.TypeString, model.TypeCorelnk:
		return []byte(v.Str), nil
	case model.TypeOpaque:
		return v.Bytes, nil
	case model.TypeInteger, model.TypeTime:
		i := v.Int
		switch {
		case i >= math.MinInt8 && i <= math.MaxInt8:
			return []byte{byte(i)}, nil
		case i >= math.MinInt16 && i <= math.MaxInt16:
			return binary.BigEndian.AppendUint16(nil, uint16(i)), nil
		case i >= math.MinInt32 && i <= math.MaxInt32:
			return binary.BigEndian.AppendUint32(nil, uint32(i)), nil
		}
		return binary.BigEndian.AppendUint64(nil, uint64(i)), nil
	case model.TypeUnsigned:
		u := v.Uint
		switch {
		case u <= math.MaxUint8:
			return []byte{byte(u)}, nil
		case u <= math.MaxUint16:
			return binary.BigEndian.AppendUint16(nil, uint16(u)), nil
		case u <= math.MaxUint32:
			return binary.BigEndian.AppendUint32(nil, uint32(u)), nil
		}
		return binary.BigEndian.AppendUint64(nil, u), nil
	case model.TypeFloat:
		if f32 := float32(v.Float); float64(f32) == v.Float {
			return binary.BigEndian.AppendUint32(nil, math.Float32bits(f32)), nil
		}
		return binary.BigEndian.AppendUint64(nil, math.Float64bits(v.Float)), nil
	case model.TypeBoolean:
		if v.Bool {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	case model.TypeObjlnk:
		b := binary.BigEndian.AppendUint16(nil, v.Link.Object)
		return binary.BigEndian.AppendUint16(b, v.Link.Instance), nil
	}
	return nil, fmt.Errorf("%w: cannot encode a %s value", model.ErrType, v.Type)
}

// DecodeValue interprets a TLV value field as type t. Unknown types
// (including TypeNone) come back as opaque bytes.
func DecodeValue(b []byte, t model.Type) (model.Value, error) {
	bad := func() (model.Value, error) {
		return model.Value{}, fmt.Errorf("%w: %d bytes cannot hold a %s", ErrMalformed, len(b), t)
	}
	switch t {
	case model.TypeString, model.TypeCorelnk:
		if !utf8.Valid(b) {
			return model.Value{}, fmt.Errorf("%w: %s is not UTF-8", ErrMalformed, t)
		}
		return model.Value{Type: t, Str: string(b)}, nil
	case model.TypeInteger, model.TypeTime:
		var i int64
		switch len(b) {
		case 1:
			i = int64(int8(b[0]))
		case 2:
			i = int64(int16(binary.BigEndian.Uint16(b)))
		case 4:
			i = int64(int32(binary.BigEndian.Uint32(b)))
		case 8:
			i = int64(binary.BigEndian.Uint64(b))
		default:
			return bad()
		}
		return model.Value{Type: t, Int: i}, nil
	case model.TypeUnsigned:
		switch len(b) {
		case 1:
			return model.Uint(uint64(b[0])), nil
		case 2:
			return model.Uint(uint64(binary.BigEndian.Uint16(b))), nil
		case 4:
			return model.Uint(uint64(binary.BigEndian.Uint32(b))), nil
		case 8:
			return model.Uint(binary.BigEndian.Uint64(b)), nil
		}
		return bad()
	case model.TypeFloat:
		switch len(b) {
		case 4:
			return model.Float(float64(math.Float32frombits(binary.BigEndian.Uint32(b)))), nil
		case 8:
			return model.Float(math.Float64frombits(binary.BigEndian.Uint64(b))), nil
		}
		return bad()
	case model.TypeBoolean:
		if len(b) != 1 || b[0] > 1 {
			return bad()
		}
		return model.Bool(b[0] == 1), nil
	case model.TypeObjlnk:
		if len(b) != 4 {
			return bad()
		}
		return model.Objlnk(binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])), nil
	}
	return model.Opaque(append([]byte{}, b...)), nil
}

// Decode parses a TLV payload addressed to base and returns records with
// absolute paths, in wire order.
//
// The top level may hold entries one level below base, or a single entry
// that restates base itself (a Resource TLV for /3/0/1, an Object Instance
// TLV for /3/0), as servers send both. Any other nesting is ErrMalformed.
// Value types come from types, asked with the 3-level resource path; a
// resource it does not know (ok false), or an executable one, comes back
// as TypeOpaque holding the raw bytes, so that the caller decides whether
// that is an error (typically 4.04). Decoding against an object path whose
// payload starts with resources returns ErrNoInstance.
func Decode(base model.Path, data []byte, types model.TypeResolver) ([]model.Record, error) {
	if base.Len() == 0 {
		return nil, fmt.Errorf("%w: TLV cannot address the root path", ErrMalformed)
	}
	d := decoder{types: types, seen: make(map[model.Path]struct{})}
	if err := d.walk(base, data, true); err != nil {
		return nil, err
	}
	return d.out, nil
}

type decoder struct {
	types model.TypeResolver
	seen  map[model.Path]struct{}
	out   []model.Record
}

func (d *decoder) walk(parent model.Path, data []byte, top bool) error {
	restated, entries := false, 0
	for len(data) > 0 {
		kind, id, value, rest, err := next(data)
		if err != nil {
			return err
		}
		data = rest
		lv := level(kind)
		var p model.Path
		switch {
		case lv == parent.Len()+1:
			p = parent.Append(id)
		case top && lv == parent.Len() && parent.ID(lv-1) == id:
			p = parent
			restated = true
		case top && parent.Len() == 1 && lv == 3:
			return ErrNoInstance
		default:
			return fmt.Errorf("%w: TLV of kind %d with ID %d below %s", ErrMalformed, kind, id, parent)
		}
		// An entry that restates base must be the only one at the top.
		if entries++; restated && entries > 1 {
			return fmt.Errorf("%w: %s restated beside other entries", ErrMalformed, parent)
		}
		if _, dup := d.seen[p]; dup {
			return fmt.Errorf("%w: %s appears twice", ErrMalformed, p)
		}
		d.seen[p] = struct{}{}
		if len(d.seen) > MaxRecords {
			return fmt.Errorf("%w: more than %d entries", ErrMalformed, MaxRecords)
		}
		switch kind {
		case kindObjectInstance, kindMultipleResource:
			if err := d.walk(p, value, false); err != nil {
				return err
			}
		default:
			t, ok := model.TypeOpaque, false
			if d.types != nil {
				t, ok = d.types(p.Truncate(3))
			}
			if !ok {
				t = model.TypeOpaque
			}
			v, err := DecodeValue(value, t)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			d.out = append(d.out, model.Record{Path: p, Value: v})
		}
	}
	return nil
}

// next splits the first TLV off data.
func next(data []byte) (kind byte, id uint16, value, rest []byte, err error) {
	t := data[0]
	kind = t >> 6
	need := 1
	if t&(1<<5) != 0 {
		need += 2
	} else {
		need++
	}
	lenType := int(t>>3) & 3
	need += lenType
	if len(data) < need {
		return 0, 0, nil, nil, fmt.Errorf("%w: truncated TLV header", ErrMalformed)
	}
	p := 1
	if t&(1<<5) != 0 {
		id = binary.BigEndian.Uint16(data[1:])
		p = 3
	} else {
		id = uint16(data[1])
		p = 2
	}
	n := int(t & 7)
	if lenType != 0 {
		n = 0
		for i := 0; i < lenType; i++ {
			n = n<<8 | int(data[p+i])
		}
		p += lenType
	}
	if n > len(data)-p {
		return 0, 0, nil, nil, fmt.Errorf("%w: TLV length %d overruns the %d bytes left", ErrMalformed, n, len(data)-p)
	}
	if id > model.MaxID {
		return 0, 0, nil, nil, fmt.Errorf("%w: reserved ID %d", ErrMalformed, id)
	}
	return kind, id, data[p : p+n], data[p+n:], nil
}

// Package model holds the LwM2M data model's vocabulary: paths, resource
// types, typed values and the records that the content-format codecs carry.
// It sits below every codec and the client core, and imports nothing of ours.
package model

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrPath reports a malformed data-model path.
var ErrPath = errors.New("model: bad path")

// ErrType reports a value that cannot be represented as the requested type.
var ErrType = errors.New("model: type mismatch")

// Path addresses a node of the data model:
// /Object, /Object/Instance, /Object/Instance/Resource or
// /Object/Instance/Resource/ResourceInstance. The zero Path is the root "/".
type Path struct {
	ids [4]uint16
	n   uint8
}

// MaxID is the largest identifier a path level may hold; 65535 is reserved
// (LwM2M 1.1 Core, 7.1 "MAX_ID").
const MaxID = 65534

// NewPath returns the path made of ids. It panics if more than four are given;
// that is a programming error, not input.
func NewPath(ids ...uint16) Path {
	if len(ids) > 4 {
		panic("model: path deeper than four levels")
	}
	var p Path
	copy(p.ids[:], ids)
	p.n = uint8(len(ids))
	return p
}

// ParsePath parses "/3/0/1", "3/0/1", "/" or "". Every level must be a
// decimal number no larger than MaxID.
func ParsePath(s string) (Path, error) {
	s = strings.TrimPrefix(s, "/")
	s = strings.TrimSuffix(s, "/")
	if s == "" {
		return Path{}, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) > 4 {
		return Path{}, fmt.Errorf("%w: %q has more than four levels", ErrPath, s)
	}
	var p Path
	for i, part := range parts {
		id, err := strconv.ParseUint(part, 10, 16)
		if err != nil || id > MaxID || part == "" || (len(part) > 1 && part[0] == '0') {
			return Path{}, fmt.Errorf("%w: level %d of %q", ErrPath, i, s)
		}
		p.ids[i] = uint16(id)
	}
	p.n = uint8(len(parts))
	return p, nil
}

// FromSegments builds a path from already-split URI-Path segments, as a CoAP
// request carries them.
func FromSegments(segs []string) (Path, error) {
	return ParsePath(strings.Join(segs, "/"))
}

// Len is the number of levels: 0 for the root, 4 for a resource instance.
func (p Path) Len() int { return int(p.n) }

// ID returns level i (0 = object). It panics if i >= Len.
func (p Path) ID(i int) uint16 {
	if i >= int(p.n) {
		panic("model: path level out of range")
	}
	return p.ids[i]
}

// Object returns the object ID, or 0 for the root path.
func (p Path) Object() uint16 { return p.ids[0] }

// Instance returns the object instance ID, or 0 if the path is shorter.
func (p Path) Instance() uint16 { return p.ids[1] }

// Resource returns the resource ID, or 0 if the path is shorter.
func (p Path) Resource() uint16 { return p.ids[2] }

// ResourceInstance returns the resource instance ID, or 0 if the path is shorter.
func (p Path) ResourceInstance() uint16 { return p.ids[3] }

// Append returns p extended by one level. It panics if p is already four levels deep.
func (p Path) Append(id uint16) Path {
	if p.n >= 4 {
		panic("model: path deeper than four levels")
	}
	p.ids[p.n] = id
	p.n++
	return p
}

// Parent returns p without its last level. The root's parent is the root.
func (p Path) Parent() Path {
	if p.n == 0 {
		return p
	}
	p.n--
	p.ids[p.n] = 0
	return p
}

// Truncate returns the first n levels of p.
func (p Path) Truncate(n int) Path {
	if n >= int(p.n) {
		return p
	}
	for i := n; i < 4; i++ {
		p.ids[i] = 0
	}
	p.n = uint8(n)
	return p
}

// Within reports whether p equals q or lies below it.
func (p Path) Within(q Path) bool {
	if p.n < q.n {
		return false
	}
	for i := 0; i < int(q.n); i++ {
		if p.ids[i] != q.ids[i] {
			return false
		}
	}
	return true
}

// String formats p as "/3/0/1"; the root is "/".
func (p Path) String() string {
	if p.n == 0 {
		return "/"
	}
	var b []byte
	for i := 0; i < int(p.n); i++ {
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(p.ids[i]), 10)
	}
	return string(b)
}

// Segments returns the levels as strings, the form of CoAP Uri-Path options.
func (p Path) Segments() []string {
	s := make([]string, p.n)
	for i := range s {
		s[i] = strconv.FormatUint(uint64(p.ids[i]), 10)
	}
	return s
}

// Type is an LwM2M resource data type (LwM2M 1.1 Core, Appendix C).
type Type uint8

// Resource data types.
const (
	TypeNone     Type = iota // executable resources carry no value
	TypeString               // UTF-8 string
	TypeInteger              // signed 64-bit
	TypeUnsigned             // unsigned 64-bit (LwM2M 1.1)
	TypeFloat                // IEEE 754 64-bit
	TypeBoolean
	TypeOpaque
	TypeTime    // Unix time in seconds
	TypeObjlnk  // object link "Object:Instance"
	TypeCorelnk // CoRE link-format string (LwM2M 1.1)
)

var typeNames = [...]string{"none", "string", "integer", "unsigned", "float", "boolean", "opaque", "time", "objlnk", "corelnk"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// TypeResolver tells a decoder the type of the resource at a three-level path.
// Formats that do not carry types on the wire (TLV, plain text) need it;
// ok is false for a resource the client does not know.
type TypeResolver func(resource Path) (t Type, ok bool)

// ObjLink is the value of an Objlnk resource.
type ObjLink struct {
	Object, Instance uint16
}

func (l ObjLink) String() string {
	return strconv.FormatUint(uint64(l.Object), 10) + ":" + strconv.FormatUint(uint64(l.Instance), 10)
}

// ParseObjLink parses "3:0".
func ParseObjLink(s string) (ObjLink, error) {
	o, i, ok := strings.Cut(s, ":")
	if !ok {
		return ObjLink{}, fmt.Errorf("%w: objlnk %q", ErrType, s)
	}
	ov, err1 := strconv.ParseUint(o, 10, 16)
	iv, err2 := strconv.ParseUint(i, 10, 16)
	if err1 != nil || err2 != nil {
		return ObjLink{}, fmt.Errorf("%w: objlnk %q", ErrType, s)
	}
	return ObjLink{uint16(ov), uint16(iv)}, nil
}

// Value is a typed resource value. Only the field that Type selects is
// meaningful: Int for Integer and Time, Uint for Unsigned, Float, Bool,
// Str for String and Corelnk, Bytes for Opaque, Link for Objlnk.
// Build values with the constructors below.
type Value struct {
	Type  Type
	Int   int64
	Uint  uint64
	Float float64
	Bool  bool
	Str   string
	Bytes []byte
	Link  ObjLink
}

// Constructors for each type.
func String(s string) Value         { return Value{Type: TypeString, Str: s} }
func Int(i int64) Value             { return Value{Type: TypeInteger, Int: i} }
func Uint(u uint64) Value           { return Value{Type: TypeUnsigned, Uint: u} }
func Float(f float64) Value         { return Value{Type: TypeFloat, Float: f} }
func Bool(b bool) Value             { return Value{Type: TypeBoolean, Bool: b} }
func Opaque(b []byte) Value         { return Value{Type: TypeOpaque, Bytes: b} }
func Time(t time.Time) Value        { return Value{Type: TypeTime, Int: t.Unix()} }
func Objlnk(obj, inst uint16) Value { return Value{Type: TypeObjlnk, Link: ObjLink{obj, inst}} }
func Corelnk(s string) Value        { return Value{Type: TypeCorelnk, Str: s} }

// Time returns a Time value as time.Time.
func (v Value) Time() time.Time { return time.Unix(v.Int, 0) }

// Equal reports whether v and w have the same type and value.
func (v Value) Equal(w Value) bool {
	if v.Type != w.Type {
		return false
	}
	switch v.Type {
	case TypeString, TypeCorelnk:
		return v.Str == w.Str
	case TypeInteger, TypeTime:
		return v.Int == w.Int
	case TypeUnsigned:
		return v.Uint == w.Uint
	case TypeFloat:
		return v.Float == w.Float || (math.IsNaN(v.Float) && math.IsNaN(w.Float))
	case TypeBoolean:
		return v.Bool == w.Bool
	case TypeOpaque:
		return string(v.Bytes) == string(w.Bytes)
	case TypeObjlnk:
		return v.Link == w.Link
	}
	return true
}

// Number returns the value as a float64 for numeric types, for the gt, lt
// and st observation attributes. ok is false for other types.
func (v Value) Number() (f float64, ok bool) {
	switch v.Type {
	case TypeInteger, TypeTime:
		return float64(v.Int), true
	case TypeUnsigned:
		return float64(v.Uint), true
	case TypeFloat:
		return v.Float, true
	}
	return 0, false
}

// String formats v the way LwM2M plain text does, except that opaque
// values are shown as a byte count; use the text codec for the wire form.
func (v Value) String() string {
	switch v.Type {
	case TypeString, TypeCorelnk:
		return v.Str
	case TypeInteger, TypeTime:
		return strconv.FormatInt(v.Int, 10)
	case TypeUnsigned:
		return strconv.FormatUint(v.Uint, 10)
	case TypeFloat:
		return strconv.FormatFloat(v.Float, 'g', -1, 64)
	case TypeBoolean:
		if v.Bool {
			return "1"
		}
		return "0"
	case TypeOpaque:
		return fmt.Sprintf("<%d bytes>", len(v.Bytes))
	case TypeObjlnk:
		return v.Link.String()
	}
	return ""
}

// Convert returns v as type t. Formats whose numbers carry no type (SenML)
// and resolvers that learn the type late rely on it. Lossy or out-of-range
// conversions fail with ErrType.
func (v Value) Convert(t Type) (Value, error) {
	if v.Type == t {
		return v, nil
	}
	bad := fmt.Errorf("%w: %s to %s", ErrType, v.Type, t)
	switch t {
	case TypeInteger, TypeTime:
		var i int64
		switch v.Type {
		case TypeInteger, TypeTime:
			i = v.Int
		case TypeUnsigned:
			if v.Uint > math.MaxInt64 {
				return Value{}, bad
			}
			i = int64(v.Uint)
		case TypeFloat:
			if v.Float != math.Trunc(v.Float) || math.Abs(v.Float) >= 1<<63 {
				return Value{}, bad
			}
			i = int64(v.Float)
		default:
			return Value{}, bad
		}
		return Value{Type: t, Int: i}, nil
	case TypeUnsigned:
		switch v.Type {
		case TypeInteger, TypeTime:
			if v.Int < 0 {
				return Value{}, bad
			}
			return Uint(uint64(v.Int)), nil
		case TypeFloat:
			if v.Float < 0 || v.Float != math.Trunc(v.Float) || v.Float >= 1<<64 {
				return Value{}, bad
			}
			return Uint(uint64(v.Float)), nil
		}
	case TypeFloat:
		switch v.Type {
		case TypeInteger, TypeTime:
			return Float(float64(v.Int)), nil
		case TypeUnsigned:
			return Float(float64(v.Uint)), nil
		}
	case TypeString:
		if v.Type == TypeCorelnk {
			return String(v.Str), nil
		}
	case TypeCorelnk:
		if v.Type == TypeString {
			return Corelnk(v.Str), nil
		}
	case TypeObjlnk:
		if v.Type == TypeString {
			l, err := ParseObjLink(v.Str)
			if err != nil {
				return Value{}, err
			}
			return Value{Type: TypeObjlnk, Link: l}, nil
		}
	}
	return Value{}, bad
}

// Record is one value at one path, the unit every content format carries.
// Path is absolute (it includes the object ID) and points at a resource or
// a resource instance.
type Record struct {
	Path  Path
	Value Value
}

// Equal reports whether r and s have the same path and value.
func (r Record) Equal(s Record) bool { return r.Path == s.Path && r.Value.Equal(s.Value) }

package server

import (
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// coreTypes holds the resource types of the core objects, from the OMA
// registry: Security (0), Server (1), Device (3) and Firmware Update (5).
// TLV and plain text carry no types, so decoding needs them.
var coreTypes = map[[2]uint16]model.Type{
	// Security
	{0, 0}: model.TypeString, {0, 1}: model.TypeBoolean, {0, 2}: model.TypeInteger,
	{0, 3}: model.TypeOpaque, {0, 4}: model.TypeOpaque, {0, 5}: model.TypeOpaque,
	{0, 6}: model.TypeInteger, {0, 7}: model.TypeOpaque, {0, 8}: model.TypeOpaque,
	{0, 9}: model.TypeString, {0, 10}: model.TypeInteger, {0, 11}: model.TypeInteger,
	{0, 12}: model.TypeInteger,
	// Server
	{1, 0}: model.TypeInteger, {1, 1}: model.TypeInteger, {1, 2}: model.TypeInteger,
	{1, 3}: model.TypeInteger, {1, 5}: model.TypeInteger, {1, 6}: model.TypeBoolean,
	{1, 7}: model.TypeString, {1, 8}: model.TypeNone, {1, 9}: model.TypeNone,
	{1, 10}: model.TypeObjlnk, {1, 11}: model.TypeInteger, {1, 12}: model.TypeInteger,
	{1, 13}: model.TypeInteger, {1, 14}: model.TypeInteger, {1, 15}: model.TypeBoolean,
	{1, 16}: model.TypeBoolean, {1, 17}: model.TypeUnsigned, {1, 18}: model.TypeUnsigned,
	{1, 19}: model.TypeUnsigned, {1, 20}: model.TypeBoolean, {1, 21}: model.TypeUnsigned,
	{1, 22}: model.TypeInteger, {1, 23}: model.TypeNone,
	// Device
	{3, 0}: model.TypeString, {3, 1}: model.TypeString, {3, 2}: model.TypeString,
	{3, 3}: model.TypeString, {3, 4}: model.TypeNone, {3, 5}: model.TypeNone,
	{3, 6}: model.TypeInteger, {3, 7}: model.TypeInteger, {3, 8}: model.TypeInteger,
	{3, 9}: model.TypeInteger, {3, 10}: model.TypeInteger, {3, 11}: model.TypeInteger,
	{3, 12}: model.TypeNone, {3, 13}: model.TypeTime, {3, 14}: model.TypeString,
	{3, 15}: model.TypeString, {3, 16}: model.TypeString, {3, 17}: model.TypeString,
	{3, 18}: model.TypeString, {3, 19}: model.TypeString, {3, 20}: model.TypeInteger,
	{3, 21}: model.TypeInteger, {3, 22}: model.TypeString,
	// Firmware Update
	{5, 0}: model.TypeOpaque, {5, 1}: model.TypeString, {5, 2}: model.TypeNone,
	{5, 3}: model.TypeInteger, {5, 5}: model.TypeInteger, {5, 6}: model.TypeString,
	{5, 7}: model.TypeString, {5, 8}: model.TypeInteger, {5, 9}: model.TypeInteger,
	{5, 10}: model.TypeNone, {5, 11}: model.TypeInteger, {5, 12}: model.TypeTime,
	{5, 13}: model.TypeUnsigned,
}

// CoreTypes is the TypeResolver for the core objects 0, 1, 3 and 5.
// Unknown resources resolve to opaque, so that nothing is lost.
func CoreTypes(p model.Path) (model.Type, bool) {
	if t, ok := coreTypes[[2]uint16{p.Object(), p.Resource()}]; ok {
		return t, true
	}
	return model.TypeOpaque, true
}

// Records decodes c, read at base, with the core objects' resource types.
func (c Content) Records(base model.Path) ([]model.Record, error) {
	return content.Decode(c.Format, base, c.Payload, CoreTypes)
}

// Objects parses the registration's link payload.
func (r Registration) Objects() ([]corelink.Link, error) {
	return corelink.Parse([]byte(r.Links))
}

package server

import (
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// coreTypes holds the resource types of the OMA objects 0 to 7, from the
// OMA LwM2M registry's object definitions (the newest version of each,
// named below; resources of older versions keep their IDs and types).
// TLV and plain text carry no types, so decoding needs them.
var coreTypes = map[[2]uint16]model.Type{
	// Security (0), version 1.2
	{0, 0}: model.TypeString, {0, 1}: model.TypeBoolean, {0, 2}: model.TypeInteger,
	{0, 3}: model.TypeOpaque, {0, 4}: model.TypeOpaque, {0, 5}: model.TypeOpaque,
	{0, 6}: model.TypeInteger, {0, 7}: model.TypeOpaque, {0, 8}: model.TypeOpaque,
	{0, 9}: model.TypeString, {0, 10}: model.TypeInteger, {0, 11}: model.TypeInteger,
	{0, 12}: model.TypeInteger, {0, 13}: model.TypeUnsigned, {0, 14}: model.TypeString,
	{0, 15}: model.TypeUnsigned, {0, 16}: model.TypeUnsigned, {0, 17}: model.TypeObjlnk,
	{0, 18}: model.TypeUnsigned, {0, 19}: model.TypeUnsigned, {0, 20}: model.TypeUnsigned,
	{0, 21}: model.TypeUnsigned, {0, 22}: model.TypeUnsigned, {0, 23}: model.TypeUnsigned,
	{0, 24}: model.TypeUnsigned, {0, 25}: model.TypeString, {0, 26}: model.TypeObjlnk,
	{0, 27}: model.TypeObjlnk, {0, 28}: model.TypeInteger, {0, 29}: model.TypeInteger,
	{0, 30}: model.TypeString,
	// Server (1), version 1.2
	{1, 0}: model.TypeInteger, {1, 1}: model.TypeInteger, {1, 2}: model.TypeInteger,
	{1, 3}: model.TypeInteger, {1, 4}: model.TypeNone, {1, 5}: model.TypeInteger,
	{1, 6}: model.TypeBoolean, {1, 7}: model.TypeString, {1, 8}: model.TypeNone,
	{1, 9}: model.TypeNone, {1, 10}: model.TypeObjlnk, {1, 11}: model.TypeUnsigned,
	{1, 12}: model.TypeTime, {1, 13}: model.TypeUnsigned, {1, 14}: model.TypeUnsigned,
	{1, 15}: model.TypeBoolean, {1, 16}: model.TypeBoolean, {1, 17}: model.TypeUnsigned,
	{1, 18}: model.TypeUnsigned, {1, 19}: model.TypeUnsigned, {1, 20}: model.TypeUnsigned,
	{1, 21}: model.TypeBoolean, {1, 22}: model.TypeString, {1, 23}: model.TypeBoolean,
	{1, 24}: model.TypeObjlnk, {1, 25}: model.TypeString, {1, 26}: model.TypeInteger,
	{1, 27}: model.TypeUnsigned,
	// Access Control (2), version 1.1
	{2, 0}: model.TypeInteger, {2, 1}: model.TypeInteger, {2, 2}: model.TypeInteger,
	{2, 3}: model.TypeInteger,
	// Device (3), version 1.2
	{3, 0}: model.TypeString, {3, 1}: model.TypeString, {3, 2}: model.TypeString,
	{3, 3}: model.TypeString, {3, 4}: model.TypeNone, {3, 5}: model.TypeNone,
	{3, 6}: model.TypeInteger, {3, 7}: model.TypeInteger, {3, 8}: model.TypeInteger,
	{3, 9}: model.TypeInteger, {3, 10}: model.TypeInteger, {3, 11}: model.TypeInteger,
	{3, 12}: model.TypeNone, {3, 13}: model.TypeTime, {3, 14}: model.TypeString,
	{3, 15}: model.TypeString, {3, 16}: model.TypeString, {3, 17}: model.TypeString,
	{3, 18}: model.TypeString, {3, 19}: model.TypeString, {3, 20}: model.TypeInteger,
	{3, 21}: model.TypeInteger, {3, 22}: model.TypeObjlnk,
	// Connectivity Monitoring (4), version 1.3
	{4, 0}: model.TypeInteger, {4, 1}: model.TypeInteger, {4, 2}: model.TypeInteger,
	{4, 3}: model.TypeInteger, {4, 4}: model.TypeString, {4, 5}: model.TypeString,
	{4, 6}: model.TypeInteger, {4, 7}: model.TypeString, {4, 8}: model.TypeInteger,
	{4, 9}: model.TypeInteger, {4, 10}: model.TypeInteger, {4, 11}: model.TypeInteger,
	{4, 12}: model.TypeInteger, {4, 13}: model.TypeInteger,
	// Firmware Update (5), version 1.2; /5/0/4 is Update Supported
	// Objects of version 1.0, since withdrawn, which older devices report.
	{5, 0}: model.TypeOpaque, {5, 1}: model.TypeString, {5, 2}: model.TypeNone,
	{5, 3}: model.TypeInteger, {5, 4}: model.TypeBoolean, {5, 5}: model.TypeInteger,
	{5, 6}: model.TypeString,
	{5, 7}: model.TypeString, {5, 8}: model.TypeInteger, {5, 9}: model.TypeInteger,
	{5, 10}: model.TypeNone, {5, 11}: model.TypeInteger, {5, 12}: model.TypeTime,
	{5, 13}: model.TypeUnsigned, {5, 14}: model.TypeBoolean,
	// Location (6), version 1.0
	{6, 0}: model.TypeFloat, {6, 1}: model.TypeFloat, {6, 2}: model.TypeFloat,
	{6, 3}: model.TypeFloat, {6, 4}: model.TypeOpaque, {6, 5}: model.TypeTime,
	{6, 6}: model.TypeFloat,
	// Connectivity Statistics (7), version 1.0
	{7, 0}: model.TypeInteger, {7, 1}: model.TypeInteger, {7, 2}: model.TypeInteger,
	{7, 3}: model.TypeInteger, {7, 4}: model.TypeInteger, {7, 5}: model.TypeInteger,
	{7, 6}: model.TypeNone, {7, 7}: model.TypeNone, {7, 8}: model.TypeInteger,
}

// CoreTypes is the TypeResolver for the OMA objects 0 to 7. Other
// resources are unknown (ok false): the decoders then keep what the
// format says, SenML's own type, plain text as a string, and TLV, which
// carries no type, as opaque bytes.
func CoreTypes(p model.Path) (model.Type, bool) {
	t, ok := coreTypes[[2]uint16{p.Object(), p.Resource()}]
	return t, ok
}

// Records decodes c, read at base, with the core objects' resource types.
func (c Content) Records(base model.Path) ([]model.Record, error) {
	return content.Decode(c.Format, base, c.Payload, CoreTypes)
}

// Objects parses the registration's link payload.
func (r Registration) Objects() ([]corelink.Link, error) {
	return corelink.Parse([]byte(r.Links))
}

package model

import "fmt"

// coreTypes holds the resource types of the OMA objects 0 to 7, from the
// OMA LwM2M registry's object definitions (the newest version of each,
// named below; resources of older versions keep their IDs and types).
// TLV and plain text carry no types, so decoding needs them.
var coreTypes = map[[2]uint16]Type{
	// Security (0), version 1.2
	{0, 0}: TypeString, {0, 1}: TypeBoolean, {0, 2}: TypeInteger,
	{0, 3}: TypeOpaque, {0, 4}: TypeOpaque, {0, 5}: TypeOpaque,
	{0, 6}: TypeInteger, {0, 7}: TypeOpaque, {0, 8}: TypeOpaque,
	{0, 9}: TypeString, {0, 10}: TypeInteger, {0, 11}: TypeInteger,
	{0, 12}: TypeInteger, {0, 13}: TypeUnsigned, {0, 14}: TypeString,
	{0, 15}: TypeUnsigned, {0, 16}: TypeUnsigned, {0, 17}: TypeObjlnk,
	{0, 18}: TypeUnsigned, {0, 19}: TypeUnsigned, {0, 20}: TypeUnsigned,
	{0, 21}: TypeUnsigned, {0, 22}: TypeUnsigned, {0, 23}: TypeUnsigned,
	{0, 24}: TypeUnsigned, {0, 25}: TypeString, {0, 26}: TypeObjlnk,
	{0, 27}: TypeObjlnk, {0, 28}: TypeInteger, {0, 29}: TypeInteger,
	{0, 30}: TypeString,
	// Server (1), version 1.2
	{1, 0}: TypeInteger, {1, 1}: TypeInteger, {1, 2}: TypeInteger,
	{1, 3}: TypeInteger, {1, 4}: TypeNone, {1, 5}: TypeInteger,
	{1, 6}: TypeBoolean, {1, 7}: TypeString, {1, 8}: TypeNone,
	{1, 9}: TypeNone, {1, 10}: TypeObjlnk, {1, 11}: TypeUnsigned,
	{1, 12}: TypeTime, {1, 13}: TypeUnsigned, {1, 14}: TypeUnsigned,
	{1, 15}: TypeBoolean, {1, 16}: TypeBoolean, {1, 17}: TypeUnsigned,
	{1, 18}: TypeUnsigned, {1, 19}: TypeUnsigned, {1, 20}: TypeUnsigned,
	{1, 21}: TypeBoolean, {1, 22}: TypeString, {1, 23}: TypeBoolean,
	{1, 24}: TypeObjlnk, {1, 25}: TypeString, {1, 26}: TypeInteger,
	{1, 27}: TypeUnsigned,
	// Access Control (2), version 1.1
	{2, 0}: TypeInteger, {2, 1}: TypeInteger, {2, 2}: TypeInteger,
	{2, 3}: TypeInteger,
	// Device (3), version 1.2
	{3, 0}: TypeString, {3, 1}: TypeString, {3, 2}: TypeString,
	{3, 3}: TypeString, {3, 4}: TypeNone, {3, 5}: TypeNone,
	{3, 6}: TypeInteger, {3, 7}: TypeInteger, {3, 8}: TypeInteger,
	{3, 9}: TypeInteger, {3, 10}: TypeInteger, {3, 11}: TypeInteger,
	{3, 12}: TypeNone, {3, 13}: TypeTime, {3, 14}: TypeString,
	{3, 15}: TypeString, {3, 16}: TypeString, {3, 17}: TypeString,
	{3, 18}: TypeString, {3, 19}: TypeString, {3, 20}: TypeInteger,
	{3, 21}: TypeInteger, {3, 22}: TypeObjlnk,
	// Connectivity Monitoring (4), version 1.3
	{4, 0}: TypeInteger, {4, 1}: TypeInteger, {4, 2}: TypeInteger,
	{4, 3}: TypeInteger, {4, 4}: TypeString, {4, 5}: TypeString,
	{4, 6}: TypeInteger, {4, 7}: TypeString, {4, 8}: TypeInteger,
	{4, 9}: TypeInteger, {4, 10}: TypeInteger, {4, 11}: TypeInteger,
	{4, 12}: TypeInteger, {4, 13}: TypeInteger,
	// Firmware Update (5), version 1.2; /5/0/4 is Update Supported
	// Objects of version 1.0, since withdrawn, which older devices report.
	{5, 0}: TypeOpaque, {5, 1}: TypeString, {5, 2}: TypeNone,
	{5, 3}: TypeInteger, {5, 4}: TypeBoolean, {5, 5}: TypeInteger,
	{5, 6}: TypeString,
	{5, 7}: TypeString, {5, 8}: TypeInteger, {5, 9}: TypeInteger,
	{5, 10}: TypeNone, {5, 11}: TypeInteger, {5, 12}: TypeTime,
	{5, 13}: TypeUnsigned, {5, 14}: TypeBoolean,
	// Location (6), version 1.0
	{6, 0}: TypeFloat, {6, 1}: TypeFloat, {6, 2}: TypeFloat,
	{6, 3}: TypeFloat, {6, 4}: TypeOpaque, {6, 5}: TypeTime,
	{6, 6}: TypeFloat,
	// Connectivity Statistics (7), version 1.0
	{7, 0}: TypeInteger, {7, 1}: TypeInteger, {7, 2}: TypeInteger,
	{7, 3}: TypeInteger, {7, 4}: TypeInteger, {7, 5}: TypeInteger,
	{7, 6}: TypeNone, {7, 7}: TypeNone, {7, 8}: TypeInteger,
}

// CoreTypes is the TypeResolver for the OMA objects 0 to 7. Other
// resources are unknown (ok false).
func CoreTypes(p Path) (Type, bool) {
	t, ok := coreTypes[[2]uint16{p.Object(), p.Resource()}]
	return t, ok
}

// MustCoreType is the type of resource res of core object obj (0 to 7),
// for the objects' definitions, which take their types from this one
// table. It panics for a resource the table does not hold.
func MustCoreType(obj, res uint16) Type {
	t, ok := coreTypes[[2]uint16{obj, res}]
	if !ok {
		panic(fmt.Sprintf("model: /%d/x/%d is not a core resource", obj, res))
	}
	return t
}

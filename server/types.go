package server

import (
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// CoreTypes is the TypeResolver for the OMA objects 0 to 7
// (model.CoreTypes). Other resources are unknown (ok false): the decoders
// then keep what the format says, SenML's own type, plain text as a
// string, and TLV, which carries no type, as opaque bytes.
func CoreTypes(p model.Path) (model.Type, bool) { return model.CoreTypes(p) }

// Records decodes c, read at base, with the core objects' resource types.
func (c Content) Records(base model.Path) ([]model.Record, error) {
	return content.Decode(c.Format, base, c.Payload, CoreTypes)
}

// Objects parses the registration's link payload.
func (r Registration) Objects() ([]corelink.Link, error) {
	return corelink.Parse([]byte(r.Links))
}

package server

// Format is a CoAP Content-Format number as LwM2M uses them
// (LwM2M 1.1 Transport, 6.4).
// TODO: make this an alias of content.Format when lwm2m/content lands.
type Format uint16

// Content formats.
const (
	TextPlain  Format = 0
	LinkFormat Format = 40
	Opaque     Format = 42
	SenMLJSON  Format = 110
	SenMLCBOR  Format = 112
	TLV        Format = 11542
)

// AnyFormat asks Read and Observe to send no Accept option and take
// whatever format the device prefers.
const AnyFormat Format = 0xFFFF

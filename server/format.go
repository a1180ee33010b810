package server

import "github.com/lwm2m-fota/lwm2m/lwm2m/content"

// AnyFormat asks Read and Observe to send no Accept option and take
// whatever format the device prefers.
const AnyFormat content.Format = 0xFFFF

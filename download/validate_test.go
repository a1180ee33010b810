package download

import (
	"errors"
	"testing"
)

// ValidateURI refuses what Get would refuse before any traffic, port 0
// included, and passes what Get would try.
func TestValidateURI(t *testing.T) {
	for uri, want := range map[string]error{
		"coap://127.0.0.1:0/fw":  ErrInvalidURI,
		"http://127.0.0.1:0/fw":  ErrInvalidURI,
		"coap://h:99999/fw":      ErrInvalidURI,
		"coaps://h:x1/fw":        ErrInvalidURI,
		"coap://:5683/fw":        ErrInvalidURI,
		"ftp://h/fw":             ErrUnsupportedScheme,
		"coap://h/fw":            nil,
		"coaps+tcp://h:65535/fw": nil,
		"https://[::1]:1/fw?a=b": nil,
	} {
		if err := ValidateURI(uri); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("ValidateURI(%q) = %v, want %v", uri, err, want)
		}
	}
}

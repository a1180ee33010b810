package server

import "github.com/lwm2m-fota/lwm2m/lwm2m/corelink"

// validLinks checks a registration payload (RFC 6690 link format, LwM2M
// 1.1 Core 6.2.1).
func validLinks(s string) error {
	if s == "" {
		return nil
	}
	_, err := corelink.Parse([]byte(s))
	return err
}

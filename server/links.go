package server

import (
	"errors"
	"strings"
)

var errBadLinks = errors.New("server: bad CoRE link payload")

// validLinks checks the shape of a registration payload (RFC 6690 link
// format, LwM2M 1.1 Core 6.2.1): comma-separated entries starting with '<'.
func validLinks(s string) error {
	if s == "" {
		return nil
	}
	for _, l := range strings.Split(s, ",") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "<") || !strings.Contains(l, ">") {
			return errBadLinks
		}
	}
	return nil
}

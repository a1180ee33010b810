// Package coapuri resolves the authority of coap, coaps, coap+tcp and
// coaps+tcp URIs, whose port is implied by the scheme when absent.
package coapuri

import (
	"net"
	"net/url"
	"strings"
)

// DefaultPort is the port a CoAP URI of scheme means when it names none:
// 5683 without security, 5684 with (RFC 7252 §6.1 and §6.2, RFC 8323
// §8.1 and §8.2). It returns "" for other schemes.
func DefaultPort(scheme string) string {
	switch strings.ToLower(scheme) {
	case "coap", "coap+tcp":
		return "5683"
	case "coaps", "coaps+tcp":
		return "5684"
	}
	return ""
}

// HostPort returns u's host and port as "host:port", with the scheme's
// default port when u names none.
func HostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = DefaultPort(u.Scheme)
	}
	return net.JoinHostPort(u.Hostname(), port)
}

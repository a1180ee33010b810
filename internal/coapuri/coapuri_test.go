package coapuri_test

import (
	"net/url"
	"testing"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
)

func TestHostPort(t *testing.T) {
	for uri, want := range map[string]string{
		"coap://example.net/fw":        "example.net:5683",
		"coaps://example.net":          "example.net:5684",
		"coap+tcp://10.0.0.1/x":        "10.0.0.1:5683",
		"coaps+tcp://[2001:db8::1]/x":  "[2001:db8::1]:5684",
		"COAPS://example.net":          "example.net:5684",
		"coap://example.net:6000/fw":   "example.net:6000",
		"coaps://[::1]:15684/fw":       "[::1]:15684",
		"coaps+tcp://h.example:1/file": "h.example:1",
	} {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		if got := coapuri.HostPort(u); got != want {
			t.Errorf("HostPort(%s) = %s, want %s", uri, got, want)
		}
	}
	if p := coapuri.DefaultPort("http"); p != "" {
		t.Errorf("DefaultPort(http) = %q, want none", p)
	}
}

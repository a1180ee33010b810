package fwupdate

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

func TestServerCredentialsFallback(t *testing.T) {
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "e", Server: "coaps://127.0.0.1:5684", Transport: unusedTransport{}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetCredentials(lwm2m.Credentials{Mode: lwm2m.SecurityPSK, PublicKeyID: []byte("dev"), SecretKey: []byte("k")})
	cases := []struct {
		uri  string
		want bool
	}{
		{"coaps://127.0.0.1:5684/fw", true},
		{"coaps://127.0.0.1/fw", true}, // default port
		{"coaps://127.0.0.1:6000/fw", false},
		{"coaps://127.0.0.2:5684/fw", false},
		{"https://127.0.0.1:5684/fw", false},
		{"coap://127.0.0.1:5684/fw", false},
	}
	for _, tc := range cases {
		sec := serverCredentials(c, tc.uri)
		if got := sec != nil; got != tc.want {
			t.Errorf("%s: server credentials used = %v, want %v", tc.uri, got, tc.want)
			continue
		}
		if sec != nil && (sec.PSKIdentity != "dev" || string(sec.PSK) != "k") {
			t.Errorf("%s: got %+v", tc.uri, sec)
		}
	}
	if !noCredentials("coaps://h/fw", nil) || noCredentials("coaps://h/fw", &download.Security{PSK: []byte("k")}) || noCredentials("https://h/fw", nil) {
		t.Error("noCredentials: wrong verdict")
	}
}

// unusedTransport lets New accept a coaps URI; the test never dials.
type unusedTransport struct{}

func (unusedTransport) Dial(context.Context) (net.Conn, error) { return nil, errors.New("unused") }

package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/lwm2m-fota/lwm2m/server"
)

// The PSK credentials file format, and a server that accepts devices over
// DTLS with those keys as well as over plain CoAP.
func ExampleParsePSKs() {
	psks, err := server.ParsePSKs(strings.NewReader(`# identity:hexkey
gateway-7:000102030405060708090a0b0c0d0e0f
urn:imei:490154203237518:f00dfeed
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(psks), "identities;", "urn:imei:490154203237518 has a", len(psks["urn:imei:490154203237518"]), "byte key")

	s := &server.Server{Addr: "127.0.0.1:0", DTLSAddr: "127.0.0.1:0", PSKs: psks, Logger: slog.New(slog.DiscardHandler)}
	if err := s.Listen(); err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)
	fmt.Println("coaps listening:", s.DTLSLocalAddr() != nil)
	// Output:
	// 2 identities; urn:imei:490154203237518 has a 4 byte key
	// coaps listening: true
}

package bootstrap_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/lwm2m-fota/lwm2m/server/bootstrap"
)

// A bootstrap server that gives every device the same NoSec LwM2M server.
func Example() {
	cfg, err := bootstrap.ParseConfig(strings.NewReader(`{"endpoints": {"*": {
		"servers": [{"uri": "coap://127.0.0.1:5683", "short_server_id": 1, "lifetime": 300,
		             "security": {"mode": "nosec"}}]}}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	bs := &bootstrap.Server{Addr: "127.0.0.1:0", Config: cfg}
	if err := bs.Listen(); err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- bs.Serve(ctx) }()
	// Devices send POST /bs?ep=NAME to bs.LocalAddr() now.
	fmt.Println(len(bs.Attempts("dev-1")), "attempts")
	cancel()
	fmt.Println(<-done)
	// Output:
	// 0 attempts
	// <nil>
}

// Configuration errors name the field.
func ExampleParseConfig() {
	_, err := bootstrap.ParseConfig(strings.NewReader(`{"endpoints": {"dev-1": {
		"servers": [{"uri": "coaps://lwm2m.example.com", "short_server_id": 1,
		             "security": {"mode": "psk", "identity": "dev-1"}}]}}}`))
	fmt.Println(err)
	// Output:
	// bootstrap: bad configuration: endpoints["dev-1"].servers[0].security.key: missing or not hex: psk needs the key in hex
}

package coaps_test

import (
	"errors"
	"log"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/mux"
	"github.com/plgd-dev/go-coap/v3/options"

	"github.com/lwm2m-fota/lwm2m/server/coaps"
)

// A coaps port with one PSK, served by go-coap's DTLS server.
func ExampleListen() {
	keys := map[string][]byte{"dev-1": []byte("secret-key-16byt")}
	lookup := func(identity []byte) ([]byte, error) {
		if k, ok := keys[string(identity)]; ok {
			return k, nil
		}
		return nil, errors.New("unknown PSK identity")
	}
	l, err := coaps.Listen("127.0.0.1:5684", lookup, nil, 64)
	if err != nil {
		log.Fatal(err)
	}
	srv := coapdtls.NewServer(options.WithMux(mux.NewRouter()))
	defer srv.Stop()
	log.Fatal(srv.Serve(l))
}

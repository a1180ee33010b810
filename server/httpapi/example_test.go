package httpapi_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// A server with its API on loopback: the token is kept in a file that the
// program's client subcommands (or curl) read.
func ExampleHandler() {
	ctx := context.Background()
	s := &server.Server{Addr: "127.0.0.1:5683"}
	if err := s.Listen(); err != nil {
		log.Fatal(err)
	}
	go s.Serve(ctx)
	token, err := httpapi.LoadOrCreateToken("/var/lib/lwm2m/api-token")
	if err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{Addr: "127.0.0.1:5780", Handler: httpapi.Handler(s, httpapi.Config{Token: token}),
		ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(hs.ListenAndServe())
	// curl -H "Authorization: Bearer $(cat /var/lib/lwm2m/api-token)" http://127.0.0.1:5780/api/devices
}

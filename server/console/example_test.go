package console_test

import (
	"log"
	"net/http"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/console"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// The console is served by the server's API handler, on the API's address:
// the operator opens http://127.0.0.1:5780/ and signs in with the token.
func ExampleHandler() {
	s := &server.Server{Addr: "127.0.0.1:5683", Inventory: true} // Inventory fills the firmware columns
	token, err := httpapi.LoadOrCreateToken("/var/lib/lwm2m/api-token")
	if err != nil {
		log.Fatal(err)
	}
	api := httpapi.Handler(s, httpapi.Config{Token: token, Console: console.Handler()})
	hs := &http.Server{Addr: "127.0.0.1:5780", Handler: api, ReadHeaderTimeout: 10 * time.Second}
	go hs.ListenAndServe()
	// ... s.Listen(), s.Serve(ctx) as usual.
}

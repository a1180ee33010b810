package campaign_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// An engine beside a server: campaigns and package records live in the
// server's bbolt store, package files beside it, and the campaign routes
// are served by the server's API behind its token.
func Example() {
	ctx := context.Background()
	store, err := server.OpenBoltStore("/var/lib/lwm2m/server.db")
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	s := &server.Server{Addr: ":5683", Store: store}
	if err := s.Listen(); err != nil {
		log.Fatal(err)
	}
	eng, err := campaign.New(campaign.Config{Server: s, Dir: "/var/lib/lwm2m/packages"})
	if err != nil {
		log.Fatal(err)
	}
	go eng.Run(ctx)
	go s.Serve(ctx)
	api := httpapi.Handler(s, httpapi.Config{Token: "…", Routes: eng.Routes()})
	go http.ListenAndServe("127.0.0.1:5780", api)

	// Or from Go: upload a package, then roll it out.
	f, err := os.Open("fw-2.0.pkg")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	pkg, err := eng.AddPackage("", f)
	if err != nil {
		log.Fatal(err)
	}
	c, err := eng.Create(campaign.Spec{
		Name:     "sensors to 2.0",
		Package:  pkg.ID,
		Target:   campaign.Target{Endpoints: "sensor-*", FirmwareVersion: "1.9"},
		Method:   campaign.MethodPullCoAP,
		Rollout:  campaign.Rollout{Canary: 5, WavePercent: 20, Concurrency: 50},
		Deadline: time.Now().Add(7 * 24 * time.Hour),
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("campaign %s: %d devices in %d waves", c.ID, len(c.Devices), len(c.Waves))
}

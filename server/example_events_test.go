package server_test

import (
	"context"
	"log"

	"github.com/lwm2m-fota/lwm2m/server"
)

// Subscribe tells what changed; fetch the details when a hint arrives.
func ExampleServer_Subscribe() {
	s := &server.Server{Addr: "127.0.0.1:0", Inventory: true}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Subscribe(ctx, func(e server.Event) {
		switch e.Kind {
		case "device":
			st, _ := s.DeviceStatus(e.Endpoint)
			log.Printf("%s %s: firmware %s, State %s, Result %s", e.Endpoint, e.Change, st.FirmwareVersion, st.StateName, st.ResultName)
		case "resync":
			log.Print("events were lost: look at everything again")
		}
	})
	// A campaign engine tells the console's browsers about its changes:
	s.PublishEvent(server.Event{Kind: "campaign", ID: "spring-rollout"})
}

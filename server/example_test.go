package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/lwm2m-fota/lwm2m/server"
)

// A server that keeps registrations in a bbolt file and updates one device
// by push.
func Example() {
	store, err := server.OpenBoltStore(filepath.Join(os.TempDir(), "lwm2m-example.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close() // the server does not close a store it was given
	s := &server.Server{Addr: "127.0.0.1:0", Store: store, Logger: slog.New(slog.DiscardHandler)}
	if err := s.Listen(); err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)

	// Devices register at coap://<s.LocalAddr()>/rd. Later:
	_, err = s.Update(ctx, "device-1", "firmware.pkg", server.Push, func(p server.Progress) {
		fmt.Println(p.Phase, p.Sent, p.Total)
	})
	fmt.Println(err)
	// Output: server: endpoint not registered: "device-1"
}

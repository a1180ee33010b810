package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// A server for queue-mode devices that report with Send: operations wait
// at most an hour for a sleeping device, and every Send is printed.
func ExampleServer_OnSend() {
	s := &server.Server{
		Addr:        "127.0.0.1:0",
		Logger:      slog.New(slog.DiscardHandler),
		QueueExpiry: time.Hour,
		OnSend: func(ep string, vals []server.SentValue) {
			for _, v := range vals {
				fmt.Println(ep, v.Path, v.Value)
			}
		},
	}
	if err := s.Listen(); err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Serve(ctx)

	// A read of a sleeping device returns once the device woke and
	// answered; the latest values it sent are at hand meanwhile.
	_, err := s.Read(ctx, "sensor-1", model.NewPath(3, 0, 9), content.TextPlain)
	fmt.Println(errors.Is(err, server.ErrNotRegistered))
	_, err = s.Values("sensor-1")
	fmt.Println(errors.Is(err, server.ErrNotRegistered))
	// Output:
	// true
	// true
}

package lwm2m_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// A battery sensor in queue mode: it listens for 10 s after each exchange,
// reports its reading with Send every 15 minutes (which wakes it), and
// switches its radio off at night.
func ExampleClient_Send() {
	c, err := lwm2m.New(lwm2m.Config{
		Endpoint:    "sensor-7",
		Server:      "coap://127.0.0.1:5683",
		QueueMode:   true,
		QueueWindow: 10 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	temp := lwm2m.NewStatic(3303, "", lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRead})
	temp.Set(0, 5700, model.Float(4.5))
	c.AddObject(temp)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	tick := time.NewTicker(15 * time.Minute)
	defer tick.Stop()
	for range tick.C {
		if h := time.Now().Hour(); h < 6 {
			c.EnterOffline() // notifications wait, Send refuses
			continue
		}
		c.ExitOffline() // an Update, then what waited
		err := c.Send(ctx, model.NewPath(3303, 0, 5700))
		var se *lwm2m.SendError
		switch {
		case errors.Is(err, lwm2m.ErrSendMuted):
			// The server asked for no Sends (/1/0/23).
		case errors.As(err, &se):
			log.Printf("server refused the reading: %v", se.Code)
		case err != nil:
			log.Print(err)
		}
	}
}

// A button that wakes a sleeping queue-mode device at once, so that the
// server can deliver what it queued for it, rather than at the next
// Registration Update.
func ExampleClient_Wake() {
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "meter-3", Server: "coap://127.0.0.1:5683", QueueMode: true})
	if err != nil {
		log.Fatal(err)
	}
	pressed := make(chan struct{})
	go func() {
		for range pressed {
			c.Wake() // an Update, then the server's queued requests
		}
	}()
	if err := c.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

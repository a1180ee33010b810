package lwm2m_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/objects"
)

// A device with the Device object and a temperature sensor (IPSO 3303),
// registered until SIGINT or SIGTERM, when it de-registers.
func Example() {
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "sensor-1", Server: "coap://127.0.0.1:5683"})
	if err != nil {
		log.Fatal(err)
	}
	c.AddObject(objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme", FirmwareVersion: "1.0"}))

	temp := lwm2m.NewStatic(3303, "",
		lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRead},  // Sensor Value
		lwm2m.Resource{ID: 5701, Type: model.TypeString, Ops: lwm2m.OpRead}, // Units
	)
	temp.Set(0, 5701, model.String("Cel"))
	temp.Set(0, 5700, model.Float(21.5)) // later calls notify observers
	c.AddObject(temp)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// An object implemented directly: a read-only counter of uptime seconds.
type uptime struct{}

func (uptime) ID() uint16          { return 3342 }
func (uptime) Instances() []uint16 { return []uint16{0} }
func (uptime) Resources(uint16) []lwm2m.Resource {
	return []lwm2m.Resource{{ID: 5500, Type: model.TypeInteger, Ops: lwm2m.OpRead}}
}
func (uptime) Read(_ context.Context, p model.Path) ([]model.Record, error) {
	return []model.Record{{Path: p, Value: model.Int(42)}}, nil
}

func ExampleObject() {
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "dev", Server: "coap://127.0.0.1:5683"})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.AddObject(uptime{}); err != nil {
		log.Fatal(err)
	}
}

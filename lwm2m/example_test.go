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

// A device with two LwM2M servers: server 1 manages firmware, server 2
// may only read /5/0. Access Control instance /2/0 says so: server 1 owns
// /5/0 (every right), server 2's ACL entry grants R.
func ExampleProvisioning() {
	rec := func(obj, inst, res uint16, v model.Value) model.Record {
		return model.Record{Path: model.NewPath(obj, inst, res), Value: v}
	}
	p := lwm2m.Provisioning{Records: []model.Record{
		rec(0, 0, 0, model.String("coap://fota.example.net:5683")), rec(0, 0, 1, model.Bool(false)),
		rec(0, 0, 2, model.Int(3)), rec(0, 0, 10, model.Int(1)),
		rec(0, 1, 0, model.String("coap://monitor.example.net:5683")), rec(0, 1, 1, model.Bool(false)),
		rec(0, 1, 2, model.Int(3)), rec(0, 1, 10, model.Int(2)),
		rec(1, 0, 0, model.Int(1)), rec(1, 0, 1, model.Int(86400)), rec(1, 0, 7, model.String("U")),
		rec(1, 1, 0, model.Int(2)), rec(1, 1, 1, model.Int(3600)), rec(1, 1, 7, model.String("U")),
		rec(2, 0, 0, model.Int(5)), rec(2, 0, 1, model.Int(0)), rec(2, 0, 3, model.Int(1)),
		{Path: model.NewPath(2, 0, 2, 2), Value: model.Int(lwm2m.RightRead)},
	}}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "dev-1", Provisioning: &p})
	if err != nil {
		log.Fatal(err)
	}
	_ = c // add objects, then c.Run(ctx) registers with both servers
}

// An object that answers each server differently.
func ExampleShortServerID() {
	o := lwm2m.NewStatic(3341, "", lwm2m.Resource{ID: 5527, Type: model.TypeString, Ops: lwm2m.OpRW})
	o.OnWrite(func(ctx context.Context, p model.Path, _ []model.Record) error {
		if ssid, ok := lwm2m.ShortServerID(ctx); ok {
			log.Printf("server %d writes %v", ssid, p)
		}
		return nil
	})
}

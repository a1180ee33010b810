package objects_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/objects"
)

// myFirmware stands for the application's handlers (docs/FIRMWARE_UPDATE.md).
type myFirmware struct{}

func (*myFirmware) StreamOpen(context.Context, string, []byte) error { return nil }
func (*myFirmware) StreamWrite([]byte) error                         { return nil }
func (*myFirmware) StreamFinish() error                              { return nil }
func (*myFirmware) Reset() error                                     { return nil }
func (*myFirmware) PerformUpgrade(context.Context) error             { return fwupdate.ErrUpdateFailed }

// readmeDevice is README.md's "The library in 20 lines", which
// TestReadmeSnippet keeps identical to this body.
func readmeDevice() {
	// README begin
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "sensor-1", Server: "coap://lwm2m.example.net:5683"})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.AddObject(objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme", FirmwareVersion: "1.0"})); err != nil {
		log.Fatal(err)
	}

	temp := lwm2m.NewStatic(3303, "",
		lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRead},  // Sensor Value
		lwm2m.Resource{ID: 5701, Type: model.TypeString, Ops: lwm2m.OpRead}) // Units
	temp.Set(0, 5701, model.String("Cel"))
	temp.Set(0, 5700, model.Float(21.5)) // each later Set notifies observers (pmin/pmax respected)
	if err := c.AddObject(temp); err != nil {
		log.Fatal(err)
	}

	fw, err := fwupdate.Install(c, &myFirmware{}, fwupdate.Config{ // five handlers: see docs/FIRMWARE_UPDATE.md
		Store: fwupdate.FileStore{Path: "/var/lib/fw/state.json"}})
	if err != nil {
		log.Fatal(err)
	}
	defer fw.Close() // saves a download's progress, so that it resumes
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Registers, updates before the lifetime ends, retries with backoff;
	// on SIGINT or SIGTERM it de-registers and returns nil.
	if err := c.Run(ctx); err != nil {
		log.Print(err)
	}
	// README end
}

// The README's snippet is this file's readmeDevice, which compiles, so the
// snippet cannot rot.
func TestReadmeSnippet(t *testing.T) {
	_ = readmeDevice // compiled, not run: it would register with example.net
	src, err := os.ReadFile("readme_example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`(?s)// README begin\n(.*?)\t// README end`).FindSubmatch(src)
	snippet := regexp.MustCompile("(?s)## The library in 20 lines.*?```go\n(.*?)```").FindSubmatch(readme)
	if body == nil || snippet == nil {
		t.Fatal("markers not found")
	}
	code := strings.ReplaceAll("\n"+string(body[1]), "\n\t", "\n")[1:]
	if code != string(snippet[1]) {
		t.Errorf("README.md's library snippet differs from readmeDevice; README has:\n%s\nthe example has:\n%s", snippet[1], code)
	}
}

package objects_test

import (
	"context"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/objects"
)

func TestDevice(t *testing.T) {
	d := objects.NewDevice(objects.DeviceInfo{Manufacturer: "Acme", FirmwareVersion: "1.0"})
	ctx := context.Background()
	read := func(res uint16) []model.Record {
		t.Helper()
		recs, err := d.Read(ctx, model.NewPath(3, 0, res))
		if err != nil {
			t.Fatalf("read /3/0/%d: %v", res, err)
		}
		return recs
	}
	if v := read(objects.DeviceManufacturer); v[0].Value.Str != "Acme" {
		t.Errorf("manufacturer %v", v)
	}
	// Error Code is a multiple resource that starts as 0, "no error".
	if v := read(objects.DeviceErrorCode); len(v) != 1 || v[0].Path != model.NewPath(3, 0, 11, 0) || v[0].Value.Int != 0 {
		t.Errorf("error code %v", v)
	}
	// Current Time comes from the clock.
	if v := read(objects.DeviceCurrentTime); time.Since(v[0].Value.Time()) > time.Minute {
		t.Errorf("current time %v", v[0].Value.Time())
	}
	if v := read(objects.DeviceSupportedBinding); v[0].Value.Str != "U" {
		t.Errorf("binding %v", v)
	}
	if d.Version() != "1.1" {
		t.Errorf("version %q", d.Version())
	}
}

func TestDeviceRebootAndVersion(t *testing.T) {
	rebooted := make(chan struct{})
	d := objects.NewDevice(objects.DeviceInfo{FirmwareVersion: "1.0", Reboot: func() { close(rebooted) }})
	if err := d.Execute(context.Background(), model.NewPath(3, 0, objects.DeviceReboot), ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rebooted:
	case <-time.After(5 * time.Second):
		t.Fatal("Reboot was not called")
	}
	d.SetFirmwareVersion("2.0")
	if v, ok := d.Get(0, objects.DeviceFirmwareVersion); !ok || v.Str != "2.0" {
		t.Fatalf("firmware version %v, %v", v, ok)
	}
	// Without a Reboot function the resource exists but refuses.
	d2 := objects.NewDevice(objects.DeviceInfo{})
	if err := d2.Execute(context.Background(), model.NewPath(3, 0, objects.DeviceReboot), ""); err == nil {
		t.Error("Execute Reboot without a function succeeded")
	}
}

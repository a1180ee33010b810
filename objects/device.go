// Package objects provides the standard objects an application serves
// beside its own: Device (/3). Security (/0) and Server (/1) belong to the
// client core, which reads them to register.
package objects

import (
	"context"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Device object resources (OMA registry, object 3 version 1.1).
const (
	DeviceManufacturer     = 0
	DeviceModelNumber      = 1
	DeviceSerialNumber     = 2
	DeviceFirmwareVersion  = 3
	DeviceReboot           = 4
	DeviceFactoryReset     = 5
	DevicePowerSources     = 6
	DeviceBatteryLevel     = 9
	DeviceErrorCode        = 11
	DeviceCurrentTime      = 13
	DeviceUTCOffset        = 14
	DeviceTimezone         = 15
	DeviceSupportedBinding = 16
	DeviceType             = 17
	DeviceHardwareVersion  = 18
	DeviceSoftwareVersion  = 19
)

// DeviceInfo is what the application knows about itself. Empty strings are
// left out of the object.
type DeviceInfo struct {
	Manufacturer, ModelNumber, SerialNumber string
	FirmwareVersion                         string
	DeviceType, HardwareVersion             string
	SoftwareVersion                         string
	// Reboot is run by Execute on /3/0/4, after the server has its answer.
	// Nil makes Reboot answer 4.05.
	Reboot func()
}

// Device is the Device object (/3), version 1.1.
type Device struct {
	*lwm2m.Static
}

// NewDevice returns a Device object with one instance filled from info.
// Error Code (/3/0/11) starts as 0, "no error", as the registry asks.
func NewDevice(info DeviceInfo) *Device {
	s := lwm2m.NewStatic(3, "1.1",
		lwm2m.Resource{ID: DeviceManufacturer, Type: model.MustCoreType(3, DeviceManufacturer), Ops: lwm2m.OpRead},
		lwm2m.Resource{ID: DeviceModelNumber, Type: model.MustCoreType(3, DeviceModelNumber), Ops: lwm2m.OpRead},
		lwm2m.Resource{ID: DeviceSerialNumber, Type: model.MustCoreType(3, DeviceSerialNumber), Ops: lwm2m.OpRead},
		lwm2m.Resource{ID: DeviceFirmwareVersion, Type: model.MustCoreType(3, DeviceFirmwareVersion), Ops: lwm2m.OpRead},
		lwm2m.Resource{ID: DeviceReboot, Type: model.MustCoreType(3, DeviceReboot), Ops: lwm2m.OpExecute},
		lwm2m.Resource{ID: DeviceErrorCode, Type: model.MustCoreType(3, DeviceErrorCode), Ops: lwm2m.OpRead, Multiple: true},
		lwm2m.Resource{ID: DeviceCurrentTime, Type: model.MustCoreType(3, DeviceCurrentTime), Ops: lwm2m.OpRW},
		lwm2m.Resource{ID: DeviceUTCOffset, Type: model.MustCoreType(3, DeviceUTCOffset), Ops: lwm2m.OpRW},
		lwm2m.Resource{ID: DeviceTimezone, Type: model.MustCoreType(3, DeviceTimezone), Ops: lwm2m.OpRW},
		lwm2m.Resource{ID: DeviceSupportedBinding, Type: model.MustCoreType(3, DeviceSupportedBinding), Ops: lwm2m.OpRead},
		lwm2m.Resource{ID: DeviceType, Type: model.MustCoreType(3, DeviceType), Ops: lwm2m.OpRead},
		lwm2m.Resource{ID: DeviceHardwareVersion, Type: model.MustCoreType(3, DeviceHardwareVersion), Ops: lwm2m.OpRead},
		lwm2m.Resource{ID: DeviceSoftwareVersion, Type: model.MustCoreType(3, DeviceSoftwareVersion), Ops: lwm2m.OpRead},
	)
	d := &Device{Static: s}
	s.AddInstance(0)
	for res, v := range map[uint16]string{
		DeviceManufacturer:    info.Manufacturer,
		DeviceModelNumber:     info.ModelNumber,
		DeviceSerialNumber:    info.SerialNumber,
		DeviceFirmwareVersion: info.FirmwareVersion,
		DeviceType:            info.DeviceType,
		DeviceHardwareVersion: info.HardwareVersion,
		DeviceSoftwareVersion: info.SoftwareVersion,
	} {
		if v != "" {
			s.Set(0, res, model.String(v))
		}
	}
	s.SetMulti(0, DeviceErrorCode, map[uint16]model.Value{0: model.Int(0)})
	s.Set(0, DeviceCurrentTime, model.Time(time.Now())) // read from the clock; set so it is listed
	s.Set(0, DeviceSupportedBinding, model.String("U"))
	s.Set(0, DeviceUTCOffset, model.String(time.Now().Format("-07:00")))
	s.Set(0, DeviceTimezone, model.String(time.Local.String()))
	if info.Reboot != nil {
		reboot := info.Reboot
		s.OnExecute(DeviceReboot, func(context.Context, uint16, string) error {
			// Answer 2.04 first; the reboot would cut the response off.
			time.AfterFunc(100*time.Millisecond, reboot)
			return nil
		})
	}
	return d
}

// SetFirmwareVersion updates /3/0/3, as after a firmware update.
func (d *Device) SetFirmwareVersion(v string) {
	d.Set(0, DeviceFirmwareVersion, model.String(v))
}

// Read serves Current Time from the clock and the rest from memory.
func (d *Device) Read(ctx context.Context, res model.Path) ([]model.Record, error) {
	if res.Resource() == DeviceCurrentTime {
		return []model.Record{{Path: res, Value: model.Time(time.Now())}}, nil
	}
	return d.Static.Read(ctx, res)
}

package servertest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/lwm2m-fota/lwm2m/server"
)

// Start listens with s, on a free loopback port unless s.Addr is set, and
// serves until the test ends; Serve's error fails the test. A nil Logger
// logs through t under -v.
func Start(t testing.TB, s *server.Server) *server.Server {
	t.Helper()
	if s.Addr == "" {
		s.Addr = "127.0.0.1:0"
	}
	if s.Logger == nil {
		s.Logger = lwm2mtest.Logger(t)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	// Not t.Context: it ends before the cleanups, and the devices, started
	// later, must de-register (their cleanups run first) while it serves.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// DeviceConfig describes a device for RunDevice.
type DeviceConfig struct {
	Endpoint string
	// Info is the Device object's (/3) content.
	Info objects.DeviceInfo
	// Firmware handles the Firmware Update object's (/5) package.
	Firmware fwupdate.Handlers
	// Initial is the /5 state at the start, as if kept from before a
	// reboot; nil means Idle.
	Initial *fwupdate.Persisted
	// Installed, when set, is given the /5 object before the client
	// runs: Firmware's PerformUpgrade needs it to set the result.
	Installed func(*fwupdate.Object)
}

// Device is an in-process LwM2M client (package lwm2m) with the Device
// object (/3) and a Firmware Update object (/5).
type Device struct {
	Client *lwm2m.Client
	FW     *fwupdate.Object
	cancel context.CancelFunc
	done   chan struct{}
	stop   sync.Once
}

// RunDevice runs a device against s until the test ends or Stop, and
// waits until s has it registered. It returns an error rather than
// failing t, so that it may run on other goroutines than the test's.
func RunDevice(t testing.TB, s *server.Server, cfg DeviceConfig) (*Device, error) {
	quiet := lwm2mtest.Logger(t)
	// A short ACK timeout: loopback loses nothing, and a lost exchange
	// should not hold a test for RFC 7252's 93 s.
	c, err := lwm2m.New(lwm2m.Config{Endpoint: cfg.Endpoint, Server: "coap://" + s.LocalAddr().String(), Lifetime: time.Hour, Logger: quiet,
		Tx: lwm2m.TxParams{AckTimeout: time.Second, MaxRetransmit: 4}})
	if err != nil {
		return nil, err
	}
	c.AddObject(objects.NewDevice(cfg.Info))
	fw, err := fwupdate.Install(c, cfg.Firmware, fwupdate.Config{Logger: quiet, Initial: cfg.Initial})
	if err != nil {
		return nil, err
	}
	if cfg.Installed != nil {
		cfg.Installed(fw)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Device{Client: c, FW: fw, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(d.done); _ = c.Run(ctx) }()
	t.Cleanup(d.Stop)
	err = waitfor.Poll(20*time.Second, func() error {
		if _, ok := s.Registration(cfg.Endpoint); !ok || !c.Registered() {
			return fmt.Errorf("%s not registered", cfg.Endpoint)
		}
		return nil
	})
	return d, err
}

// Stop ends the device's client (it de-registers) and closes its /5
// object. It may be called more than once.
func (d *Device) Stop() {
	d.stop.Do(func() {
		d.cancel()
		<-d.done
		d.FW.Close()
	})
}

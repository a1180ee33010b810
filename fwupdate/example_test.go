package fwupdate_test

import (
	"context"
	"errors"
	"log"
	"os"
	"path/filepath"
	"testing"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
)

// fileFirmware stores the package in a file and applies it by handing it to
// the platform's installer. Only these five methods are mandatory.
type fileFirmware struct {
	path string
	f    *os.File
}

func (h *fileFirmware) StreamOpen(_ context.Context, uri string, etag []byte) error {
	f, err := os.Create(h.path)
	h.f = f
	return err
}

func (h *fileFirmware) StreamWrite(chunk []byte) error {
	_, err := h.f.Write(chunk)
	return err
}

func (h *fileFirmware) StreamFinish() error {
	if err := h.f.Close(); err != nil {
		return err
	}
	if !verify(h.path) {
		return fwupdate.ErrIntegrity // Update Result 5
	}
	return nil
}

// Reset is also called when there is no package: a missing file is fine.
func (h *fileFirmware) Reset() error {
	if h.f != nil {
		h.f.Close()
		h.f = nil
	}
	if err := os.Remove(h.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (h *fileFirmware) PerformUpgrade(ctx context.Context) error {
	return errors.New("installer not available") // Update Result 8
}

func verify(string) bool { return true }

func ExampleInstall() {
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "dev-1", Server: "coap://127.0.0.1:5683"})
	if err != nil {
		log.Fatal(err)
	}
	obj, err := fwupdate.Install(c, &fileFirmware{path: "/var/lib/fw/package"}, fwupdate.Config{
		Store:          fwupdate.FileStore{Path: "/var/lib/fw/state.json"}, // true State after a reboot
		MaxPackageSize: 64 << 20,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer obj.Close()
	// ... c.Run(ctx)
}

// After a reboot that applied an upgrade, the application tells the module
// how it ended; the server sees Idle with Success, or Downloaded with
// Firmware update failed.
func ExampleObject_SetResult() {
	c, _ := lwm2m.New(lwm2m.Config{Endpoint: "dev-1", Server: "coap://127.0.0.1:5683"})
	obj, _ := fwupdate.Install(c, &fileFirmware{path: "/var/lib/fw/package"}, fwupdate.Config{
		Store: fwupdate.FileStore{Path: "/var/lib/fw/state.json"},
	})
	if st, _ := obj.State(); st == fwupdate.StateUpdating {
		if runningVersion() == expectedVersion() {
			obj.SetResult(fwupdate.ResultSuccess)
		} else {
			obj.SetResult(fwupdate.ResultUpdateFailed)
		}
	}
}

func runningVersion() string  { return "2.0" }
func expectedVersion() string { return "2.0" }

// The example's Reset works when no package was ever stored.
func TestExampleResetWithoutPackage(t *testing.T) {
	h := &fileFirmware{path: filepath.Join(t.TempDir(), "package")}
	if err := h.Reset(); err != nil {
		t.Fatalf("Reset with no package: %v", err)
	}
}

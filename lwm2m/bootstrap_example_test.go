package lwm2m_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"path/filepath"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
)

// A device starts from its factory file: it bootstraps once, keeps what
// it was given in its state directory, and from then on registers at once.
func ExampleReadFactoryFile() {
	factory, err := lwm2m.ReadFactoryFile("/etc/device/factory.json")
	if err != nil {
		log.Fatal(err) // the error names the field at fault, never a key
	}
	c, err := lwm2m.New(lwm2m.Config{
		Endpoint:          "urn:imei:490154203237518",
		Provisioning:      &factory,
		ProvisioningStore: lwm2m.NewFileProvisioningStore("/var/lib/device/provisioning.json"),
		TransportFor:      coaps.TransportFor(nil), // DTLS for coaps:// accounts
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = c.Run(context.Background())
}

// Without a factory file: the bootstrap server's URI is enough.
func ExampleConfig_bootstrap() {
	c, err := lwm2m.New(lwm2m.Config{
		Endpoint:          "dev-1",
		Bootstrap:         "coap://bootstrap.example.net:5783",
		ProvisioningStore: lwm2m.NewFileProvisioningStore(filepath.Join("state", "provisioning.json")),
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = c.Run(context.Background())
}

// Validate applies the rules of Bootstrap-Finish to a configuration.
func ExampleProvisioning_Validate() {
	var p lwm2m.Provisioning // nothing at all
	var pe *lwm2m.ProvisioningError
	if err := p.Validate(); errors.As(err, &pe) {
		fmt.Println(pe.Diagnostic())
	}
	// Output: no Server instance: the client would have no LwM2M server to register with
}

package coaps_test

import (
	"fmt"
	"log"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
)

// A client that talks to its server over DTLS with a pre-shared key, and
// records the credentials it uses in the Security object (/0).
func ExampleConfigure() {
	cfg := lwm2m.Config{Endpoint: "device-42", Server: "coaps://lwm2m.example.com:5684"}
	err := coaps.Configure(&cfg, coaps.Config{
		PSKIdentity: []byte("device-42"),
		PSK:         []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef},
	})
	if err != nil {
		log.Fatal(err)
	}
	client, err := lwm2m.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.Credentials().Mode)
	// client.Run(ctx) would now register over DTLS.
	// Output: PSK
}

// Building the transport from Security object values, as after bootstrap:
// the Security Mode (/0/x/2) picks PSK or certificates.
func ExampleFromCredentials() {
	cfg, err := coaps.FromCredentials("coaps://lwm2m.example.com", lwm2m.Credentials{
		Mode:        lwm2m.SecurityPSK,
		PublicKeyID: []byte("device-42"),
		SecretKey:   []byte("secret"),
	})
	fmt.Println(string(cfg.PSKIdentity), err)

	_, err = coaps.FromCredentials("coaps://lwm2m.example.com", lwm2m.Credentials{Mode: 1})
	fmt.Println(err)
	// Output:
	// device-42 <nil>
	// coaps: raw public key mode is not supported
}

package images_test

import (
	"fmt"
	"log"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/lwm2m-fota/lwm2m/server/images"
)

// registered is the Peers of the example: one device's address.
type registered netip.Addr

func (r registered) Registered(ip netip.Addr) bool { return ip == netip.Addr(r) }

// A Store publishes a file and serves it over HTTP (and over CoAP with
// Serve on a UDP socket); Unpublish withdraws it.
func ExampleStore() {
	dir, err := os.MkdirTemp("", "images-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(file, []byte("firmware package"), 0o600); err != nil {
		log.Fatal(err)
	}

	s := images.New(registered(netip.MustParseAddr("192.0.2.7")), nil)
	defer s.Close()
	im, err := s.Publish(file)
	if err != nil {
		log.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/fw/"+im.ID, nil))
	fmt.Println(im.ID, rec.Code, rec.Body.String())

	s.Unpublish(im.ID)
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/fw/"+im.ID, nil))
	fmt.Println(rec.Code)
	// Output:
	// 6bfa3b13f2c826ec 200 firmware package
	// 404
}

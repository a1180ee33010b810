package fwpkg_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
)

func ExamplePack() {
	_, priv, err := fwpkg.GenerateKey(nil)
	if err != nil {
		log.Fatal(err)
	}
	image := strings.NewReader("new firmware image")
	var pkg bytes.Buffer
	h, err := fwpkg.Pack(&pkg, image, image.Size(), "sensor-fw", "1.4.0", priv)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(h.Name, h.Version, h.Size, h.Signed())
	// Output: sensor-fw 1.4.0 18 true
}

func ExampleWrite() {
	// When the payload can be read only once, hash it first.
	payload := []byte("image")
	size, sum, err := fwpkg.Digest(bytes.NewReader(payload))
	if err != nil {
		log.Fatal(err)
	}
	var pkg bytes.Buffer
	h := fwpkg.Header{Name: "fw", Version: "2", Size: size, SHA256: sum}
	if err := fwpkg.Write(&pkg, bytes.NewReader(payload), h, nil); err != nil {
		log.Fatal(err)
	}
	got, err := fwpkg.ReadHeader(&pkg)
	if err != nil {
		log.Fatal(err)
	}
	rest, _ := io.ReadAll(&pkg)
	fmt.Printf("%s %s %q\n", got.Name, got.Version, rest)
	// Output: fw 2 "image"
}

func ExampleVerifier() {
	pub, priv, _ := fwpkg.GenerateKey(nil)
	image := strings.NewReader("new firmware image")
	var pkg bytes.Buffer
	if _, err := fwpkg.Pack(&pkg, image, image.Size(), "sensor-fw", "1.4.0", priv); err != nil {
		log.Fatal(err)
	}

	// On the device: feed the package as it arrives, store only the payload.
	var stored bytes.Buffer
	v := fwpkg.NewVerifier(&stored, fwpkg.VerifyOptions{TrustedKey: pub, MaxSize: 1 << 20})
	for chunk := range slices(pkg.Bytes(), 7) {
		if _, err := v.Write(chunk); err != nil {
			break // Close reports the same error
		}
	}
	h, err := v.Close()
	switch {
	case errors.Is(err, fwpkg.ErrNotPackage):
		fmt.Println("Update Result 6")
	case errors.Is(err, fwpkg.ErrIntegrity):
		fmt.Println("Update Result 5")
	case errors.Is(err, fwpkg.ErrTooLarge):
		fmt.Println("Update Result 2")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("verified %s %s: %q\n", h.Name, h.Version, stored.String())
	}
	// Output: verified sensor-fw 1.4.0: "new firmware image"
}

func ExampleMarshalPublicKey() {
	pub, _, _ := fwpkg.GenerateKey(nil)
	pemBytes, err := fwpkg.MarshalPublicKey(pub)
	if err != nil {
		log.Fatal(err)
	}
	back, err := fwpkg.ParsePublicKey(pemBytes)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.SplitN(string(pemBytes), "\n", 2)[0], back.Equal(pub))
	// Output: -----BEGIN PUBLIC KEY----- true
}

// slices yields b in chunks of n bytes, as a network would deliver them.
func slices(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

package download_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
)

// fileSink writes the image to a file, truncating it to the offset Open gives.
type fileSink struct{ f *os.File }

func (s fileSink) Open(_ context.Context, etag []byte, offset, size int64) error {
	// Persist etag with offset here to resume after a reboot.
	if err := s.f.Truncate(offset); err != nil {
		return err
	}
	_, err := s.f.Seek(offset, 0)
	return err
}

func (s fileSink) Write(p []byte) (int, error) { return s.f.Write(p) }

func ExampleGet() {
	image := bytes.Repeat([]byte("firmware"), 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "fw", time.Time{}, bytes.NewReader(image))
	}))
	defer srv.Close()

	f, err := os.CreateTemp("", "fw")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	res, err := download.Get(context.Background(), download.Request{
		URI:     srv.URL + "/fw.bin", // or coap://, coaps://, coap+tcp://, https://
		Retries: 3,
	}, fileSink{f})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes, ETag %s\n", res.Bytes, res.ETag)
	// Output: 8000 bytes, ETag "v1"
}

// A server that allows several requests in flight (RFC 7252 NSTART) can be
// asked for up to Window blocks at once: on a 100 ms link that is about 8
// times faster than stop-and-wait. The Sink still sees every byte once, in
// order.
func ExampleRequest_window() {
	f, err := os.CreateTemp("", "fw")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := download.Get(ctx, download.Request{
		URI:     "coap://fw.example.com/images/v2.bin",
		Window:  8,
		Retries: 3,
	}, fileSink{f})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Bytes, "bytes")
}

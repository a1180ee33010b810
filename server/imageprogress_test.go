package server

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// The image servers report how far a pull got, from their side: the
// furthest byte sent to the device's address, rising to the image's size.
func TestWatchImage(t *testing.T) {
	s := startServer(t, &Server{HTTPAddr: "127.0.0.1:0"})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	const size = 20_000
	f, _ := writeImage(t, size)
	im, err := s.Publish(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"coap", "http"} {
		t.Run(scheme, func(t *testing.T) {
			var mu sync.Mutex
			var got []int64
			stop, err := s.WatchImage(im.ID, "dev1", func(served, total int64) {
				mu.Lock()
				defer mu.Unlock()
				if total != size {
					t.Errorf("total %d", total)
				}
				got = append(got, served)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			uri, err := s.imageURI("dev1", im, scheme)
			if err != nil {
				t.Fatal(err)
			}
			if scheme == "coap" {
				d.pull(uri) // go-coap's blockwise client, 512-byte blocks
			} else {
				resp, err := http.Get(uri)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			waitfor.Until(t, 5*time.Second, func() error {
				mu.Lock()
				n := len(got)
				last := int64(0)
				if n > 0 {
					last = got[n-1]
				}
				mu.Unlock()
				if last != size {
					return fmt.Errorf("last progress %d of %d", last, size)
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if len(got) < 2 {
				t.Errorf("%d progress reports for %d bytes", len(got), size)
			}
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Errorf("progress went from %d to %d", got[i-1], got[i])
				}
			}
		})
	}
	if _, err := s.WatchImage(im.ID, "nobody", func(int64, int64) {}); err == nil {
		t.Error("watch for an unknown endpoint")
	}
}

// An update by pull reports delivery progress like a push does.
func TestUpdatePullProgress(t *testing.T) {
	s := startServer(t, &Server{})
	newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 20_000)
	var last Progress
	r, err := s.Update(ctxT(t), "dev1", f, PullCoAP, func(p Progress) {
		if p.Phase == "deliver" {
			last = p
		}
	})
	if err != nil || r != fwobj.ResultSuccess {
		t.Fatalf("update: %v %v", r, err)
	}
	if last.Sent != 20_000 || last.Total != 20_000 {
		t.Errorf("last delivery progress %d of %d, want 20000 of 20000", last.Sent, last.Total)
	}
}

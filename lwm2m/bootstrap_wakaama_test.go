package lwm2m_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestBootstrapWakaamaSequence replays what Eclipse Wakaama's example
// bootstrap server (commit f91cfe0, docs/INTEROP.md) sent our client, byte
// for byte where it matters: Delete /0 and /1 (not /), Writes of /0/1 and
// /1/1 as bare resource TLVs in Wakaama's own encoding (8-bit IDs, the
// Security instance without keys, the Server instance numbered after its
// Short Server ID rather than 0), Bootstrap-Discover of / and Finish. CI
// cannot build Wakaama; this keeps what worked against it from breaking.
func TestBootstrapWakaamaSequence(t *testing.T) {
	const tlv = 11542
	srv := lwm2mtest.Start(t, "")
	results := make(chan error, 1)
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		results <- func() error {
			do := func(code codes.Code, path string, format int, body []byte, opts ...message.Option) (lwm2mtest.Response, error) {
				return lwm2mtest.Do(ctx, r.Conn, code, path, format, body, opts...)
			}
			for _, path := range []string{"/0", "/1"} {
				if resp, err := do(codes.DELETE, path, -1, nil); err != nil || resp.Code != codes.Deleted {
					return fmt.Errorf("Delete %s: %v %v, want 2.02", path, resp.Code, err)
				}
			}
			uri := srv.URI()
			// URI, Bootstrap-Server false, Short Server ID 1, Security Mode NoSec (3), in Wakaama's order.
			security := append([]byte{0xC8, 0x00, byte(len(uri))}, uri...)
			security = append(security, 0xC1, 0x01, 0x00, 0xC1, 0x0A, 0x01, 0xC1, 0x02, 0x03)
			if resp, err := do(codes.PUT, "/0/1", tlv, security); err != nil || resp.Code != codes.Changed {
				return fmt.Errorf("Write /0/1: %v %v %s, want 2.04", resp.Code, err, resp.Payload)
			}
			// Short Server ID 1, lifetime 60, storing false, binding "U".
			server := []byte{0xC1, 0x00, 0x01, 0xC1, 0x01, 0x3C, 0xC1, 0x06, 0x00, 0xC1, 0x07, 'U'}
			if resp, err := do(codes.PUT, "/1/1", tlv, server); err != nil || resp.Code != codes.Changed {
				return fmt.Errorf("Write /1/1: %v %v %s, want 2.04", resp.Code, err, resp.Payload)
			}
			disc, err := do(codes.GET, "/", -1, nil, message.Option{ID: message.Accept, Value: []byte{40}})
			if err != nil || disc.Code != codes.Content {
				return fmt.Errorf("Discover /: %v %v", disc.Code, err)
			}
			want := `</>;lwm2m=1.1,</0/0>;uri="` + r.ServerURI() + `",</0/1>;ssid=1;uri="` + uri + `",</1/1>;ssid=1,`
			if !strings.HasPrefix(string(disc.Payload), want) {
				return fmt.Errorf("Discover / = %s, want it to start %s", disc.Payload, want)
			}
			if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
				return fmt.Errorf("Finish: %v %v %s, want 2.04", resp.Code, err, resp.Payload)
			}
			return nil
		}()
	})
	store := lwm2m.NewFileProvisioningStore(filepath.Join(t.TempDir(), "provisioning.json"))
	runBootstrapClient(t, lwm2m.Config{Endpoint: "wk-1", Bootstrap: bs.URI(), ProvisioningStore: store})
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	reg := waitRegister(t, srv, "wk-1")
	if !slices.Contains(reg.Query, "lt=60") {
		t.Errorf("registered with %v, want the lifetime 60 Wakaama wrote", reg.Query)
	}
	if !strings.Contains(reg.Links, "</1/1>") {
		t.Errorf("Register links %s, want the Server instance </1/1> Wakaama created", reg.Links)
	}
	resp, err := lwm2mtest.Do(context.Background(), reg.Conn, codes.GET, "/1/1/0", -1, nil)
	if err != nil || resp.Code != codes.Content || string(resp.Payload) != "1" {
		t.Errorf("the server read its Short Server ID /1/1/0: %v %q %v, want 2.05 1", resp.Code, resp.Payload, err)
	}
}

package coaps_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// The dialer's PSK handshake interoperates with OpenSSL and GnuTLS: a PUT
// then a GET over the session return the same bytes, and a wrong key fails
// with an error that names the PSK.
func TestInteropLibcoapPSK(t *testing.T) {
	for _, bin := range []string{"coap-server-openssl", "coap-server-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			server := libcoaptest.NeedBinary(t, bin)
			port := libcoaptest.StartServer(t, server, "-k", "secretPSK", "-h", "CoAP") + 1 // DTLS listens one above CoAP
			uri := fmt.Sprintf("coaps://127.0.0.1:%d", port)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			dial, err := coaps.NewTransport(coaps.Config{Server: uri, PSKIdentity: []byte("device"), PSK: []byte("secretPSK"), Logger: lwm2mtest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			nc, err := dial.Dial(ctx)
			if err != nil {
				t.Fatalf("handshake with %s: %v", bin, err)
			}
			cc := coapOver(ctx, nc)
			defer cc.Close()

			data := make([]byte, 512)
			rand.Read(data)
			resp, err := lwm2mtest.Do(ctx, cc, codes.PUT, "/fw", 42, data)
			if err != nil || (resp.Code != codes.Created && resp.Code != codes.Changed) {
				t.Fatalf("PUT /fw: %v %v", resp.Code, err)
			}
			resp, err = lwm2mtest.Do(ctx, cc, codes.GET, "/fw", -1, nil)
			if err != nil || resp.Code != codes.Content {
				t.Fatalf("GET /fw: %v %v", resp.Code, err)
			}
			if sha256.Sum256(resp.Payload) != sha256.Sum256(data) {
				t.Fatalf("GET /fw returned %d bytes that differ from the %d PUT", len(resp.Payload), len(data))
			}
			resp, err = lwm2mtest.Do(ctx, cc, codes.GET, "/.well-known/core", -1, nil)
			if err != nil || resp.Code != codes.Content || !strings.Contains(string(resp.Payload), "</fw>") {
				t.Fatalf("GET /.well-known/core: %v %q %v", resp.Code, resp.Payload, err)
			}

			bad, err := coaps.NewTransport(coaps.Config{Server: uri, PSKIdentity: []byte("device"), PSK: []byte("wrongPSK"),
				HandshakeTimeout: 3 * time.Second, Logger: lwm2mtest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			cc2, err := bad.Dial(ctx)
			if err == nil {
				cc2.Close()
				t.Fatal("handshake succeeded with a wrong PSK")
			}
			if !errors.Is(err, coaps.ErrPSKRejected) && !errors.Is(err, coaps.ErrTimeout) || !strings.Contains(err.Error(), "PSK") {
				t.Fatalf("wrong PSK: err = %v", err)
			}
			t.Logf("wrong PSK: %v", err)
		})
	}
}

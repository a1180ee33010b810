package coaps_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Bootstrap over DTLS with a PSK, which provisions an LwM2M server that
// also takes a PSK (another identity and key): both legs are coaps, and
// each uses the key its Security instance holds.
func TestBootstrapPSKBothLegs(t *testing.T) {
	const bsID, bsKey = "dev-bs", "bootstrap-key-16"
	srv := pskServer(t, nil) // testIdentity, testKey
	bs := lwm2mtest.StartBootstrapDTLS(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		write := func(p model.Path, recs []model.Record) {
			body, _ := content.Encode(content.TLV, p, recs)
			if resp, err := lwm2mtest.Do(ctx, r.Conn, codes.PUT, p.String(), int(content.TLV), body); err != nil || resp.Code != codes.Changed {
				t.Errorf("Bootstrap-Write %s: %v %v", p, resp.Code, err)
			}
		}
		write(model.NewPath(0, 1), []model.Record{
			{Path: model.NewPath(0, 1, 0), Value: model.String(srv.URI())},
			{Path: model.NewPath(0, 1, 1), Value: model.Bool(false)},
			{Path: model.NewPath(0, 1, 2), Value: model.Int(int64(lwm2m.SecurityPSK))},
			{Path: model.NewPath(0, 1, 3), Value: model.Opaque([]byte(testIdentity))},
			{Path: model.NewPath(0, 1, 5), Value: model.Opaque([]byte(testKey))},
			{Path: model.NewPath(0, 1, 10), Value: model.Int(1)},
		})
		write(model.NewPath(1, 0), []model.Record{
			{Path: model.NewPath(1, 0, 0), Value: model.Int(1)},
			{Path: model.NewPath(1, 0, 1), Value: model.Int(60)},
			{Path: model.NewPath(1, 0, 7), Value: model.String("U")},
		})
		if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
			t.Errorf("Bootstrap-Finish: %v %v %s", resp.Code, err, resp.Payload)
		}
	}, dtls.WithPSK(func(id []byte) ([]byte, error) {
		if string(id) != bsID {
			return nil, errors.New("unknown identity")
		}
		return []byte(bsKey), nil
	}), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))

	cfg := lwm2m.Config{Endpoint: "bs-psk", Bootstrap: bs.URI(), Logger: lwm2mtest.Logger(t),
		BootstrapCredentials: &lwm2m.Credentials{Mode: lwm2m.SecurityPSK, PublicKeyID: []byte(bsID), SecretKey: []byte(bsKey)},
		TransportFor:         coaps.TransportFor(lwm2mtest.Logger(t)),
		RetryMin:             10 * time.Millisecond, RetryMax: 100 * time.Millisecond}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lwm2mtest.RunClient(t, srv.Server, c, "bs-psk")
	select {
	case code := <-bs.Finished:
		if code != codes.Changed {
			t.Errorf("Finish: %v", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to Bootstrap-Finish")
	}
	for _, r := range c.Provisioning().Records {
		if r.Path == model.NewPath(0, 1, 3) && string(r.Value.Bytes) != testIdentity {
			t.Errorf("/0/1/3 after bootstrap: %q, want %q", r.Value.Bytes, testIdentity)
		}
	}
}

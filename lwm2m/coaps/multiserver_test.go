package coaps_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// A provisioned client with a coap server and a coaps server (PSK from
// its Security instance) registers with both: TransportFor builds the
// DTLS transport of the second account from /0/1.
func TestTransportForSeveralServers(t *testing.T) {
	plain := lwm2mtest.Start(t, "")
	secure := pskServer(t, nil)
	rec := func(obj, inst, res uint16, v model.Value) model.Record {
		return model.Record{Path: model.NewPath(obj, inst, res), Value: v}
	}
	p := lwm2m.Provisioning{Records: []model.Record{
		rec(0, 0, 0, model.String(plain.URI())), rec(0, 0, 1, model.Bool(false)), rec(0, 0, 2, model.Int(3)), rec(0, 0, 10, model.Int(1)),
		rec(0, 1, 0, model.String(secure.URI())), rec(0, 1, 1, model.Bool(false)), rec(0, 1, 2, model.Int(int64(lwm2m.SecurityPSK))),
		rec(0, 1, 3, model.Opaque([]byte(testIdentity))), rec(0, 1, 5, model.Opaque([]byte(testKey))), rec(0, 1, 10, model.Int(2)),
		rec(1, 0, 0, model.Int(1)), rec(1, 0, 1, model.Int(300)), rec(1, 0, 7, model.String("U")),
		rec(1, 1, 0, model.Int(2)), rec(1, 1, 1, model.Int(300)), rec(1, 1, 7, model.String("U")),
	}}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "mixed", Provisioning: &p, Logger: lwm2mtest.Logger(t),
		TransportFor: coaps.TransportFor(lwm2mtest.Logger(t)), RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if _, err := plain.WaitRegister(wctx, "mixed"); err != nil {
		t.Fatalf("coap server: %v", err)
	}
	if _, err := secure.WaitRegister(wctx, "mixed"); err != nil {
		t.Fatalf("coaps server: %v", err)
	}
	waitfor.Until(t, 10*time.Second, func() error {
		for _, s := range c.Servers() {
			if !s.Registered() {
				return errors.New(s.URI + " not registered")
			}
		}
		return nil
	})
}

// An account whose Security Mode has no transport (NoSec on coaps) is
// refused by TransportFor.
func TestTransportForNoSec(t *testing.T) {
	if _, err := coaps.TransportFor(nil)("coaps://127.0.0.1:5684", lwm2m.Credentials{Mode: lwm2m.SecurityNoSec}); !errors.Is(err, coaps.ErrNoSec) {
		t.Errorf("NoSec: %v, want ErrNoSec", err)
	}
}

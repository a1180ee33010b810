package lwm2m_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/coaps"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Over DTLS a sleeping session keeps its connection parked: it answers
// nothing, and wakes without a new handshake, so that the server's
// observation goes on.
func TestQueueModeDTLSParksTheSession(t *testing.T) {
	srv := lwm2mtest.StartDTLS(t, dtls.WithPSK(func(id []byte) ([]byte, error) {
		if string(id) != "q-psk" {
			return nil, errors.New("unknown identity")
		}
		return []byte("0123456789abcdef"), nil
	}), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	cfg := queueCfg()
	cfg.Endpoint, cfg.Server, cfg.Tx, cfg.Logger = "q-dtls", srv.URI(), fastTx, testLogger(t)
	if err := coaps.Configure(&cfg, coaps.Config{PSKIdentity: []byte("q-psk"), PSK: []byte("0123456789abcdef")}); err != nil {
		t.Fatal(err)
	}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	obj := counter()
	if err := c.AddObject(obj); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	tctx, tcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer tcancel()
	reg, err := srv.WaitRegister(tctx, "q-dtls")
	if err != nil {
		t.Fatal(err)
	}
	ch, stop, err := lwm2mtest.Observe(tctx, reg.Conn, "/3300/0/5700")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	<-ch

	waitPhase(t, c, "sleeping")
	qctx, qcancel := context.WithTimeout(context.Background(), time.Second)
	defer qcancel()
	if r, err := lwm2mtest.Do(qctx, reg.Conn, codes.GET, "/3/0/0", 0, nil); err == nil {
		t.Fatalf("sleeping client answered %v", r.Code)
	}
	obj.Set(0, 5700, model.Float(42)) // due: wakes the client
	select {
	case n := <-ch:
		if string(n.Payload) != "42" {
			t.Fatalf("notification %q, want 42", n.Payload)
		}
	case <-tctx.Done():
		t.Fatal("no notification after waking")
	}
	var up lwm2mtest.Registration
	for !up.Update {
		if up, err = srv.Next(tctx); err != nil {
			t.Fatal("no Update on waking")
		}
	}
	if up.Conn != reg.Conn {
		t.Error("the client woke with a new DTLS session")
	}
}

package fwupdate_test

import (
	"context"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// With two servers, the Access Control instance of /5/0 decides who may
// update: server 1 owns /5/0, server 2 may only read. Server 2's writes
// and executes get 4.01 and leave the State alone; server 1's push
// succeeds, and both servers, each observing State, are notified of it.
func TestSeveralServersFirmwareACL(t *testing.T) {
	a, b := lwm2mtest.Start(t, ""), lwm2mtest.Start(t, "")
	rec := func(obj, inst, res uint16, v model.Value) model.Record {
		return model.Record{Path: model.NewPath(obj, inst, res), Value: v}
	}
	p := lwm2m.Provisioning{Records: []model.Record{
		rec(0, 0, 0, model.String(a.URI())), rec(0, 0, 1, model.Bool(false)), rec(0, 0, 2, model.Int(3)), rec(0, 0, 10, model.Int(1)),
		rec(0, 1, 0, model.String(b.URI())), rec(0, 1, 1, model.Bool(false)), rec(0, 1, 2, model.Int(3)), rec(0, 1, 10, model.Int(2)),
		rec(1, 0, 0, model.Int(1)), rec(1, 0, 1, model.Int(300)), rec(1, 0, 7, model.String("U")),
		rec(1, 1, 0, model.Int(2)), rec(1, 1, 1, model.Int(300)), rec(1, 1, 7, model.String("U")),
		rec(2, 0, 0, model.Int(5)), rec(2, 0, 1, model.Int(0)), rec(2, 0, 3, model.Int(1)),
		{Path: model.NewPath(2, 0, 2, 2), Value: model.Int(lwm2m.RightRead)},
	}}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "fw-two", Provisioning: &p, Logger: lwm2mtest.Logger(t),
		Tx: lwm2m.TxParams{AckTimeout: 300 * time.Millisecond, MaxRetransmit: 3}})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := fwupdate.Install(c, newMem(), fwupdate.Config{Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(obj.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	connA, connB := a.WaitConn(wctx, "fw-two"), b.WaitConn(wctx, "fw-two")
	obsA, stopA, err := lwm2mtest.Observe(wctx, connA, "/5/0/3")
	if err != nil {
		t.Fatal(err)
	}
	defer stopA()
	obsB, stopB, err := lwm2mtest.Observe(wctx, connB, "/5/0/3")
	if err != nil {
		t.Fatal(err)
	}
	defer stopB()
	for _, ch := range []<-chan lwm2mtest.Response{obsA, obsB} {
		if r := <-ch; r.Code != codes.Content || string(r.Payload) != "0" {
			t.Fatalf("observe State: %v %q, want 2.05 0", r.Code, r.Payload)
		}
	}

	for _, tc := range []struct {
		name   string
		method codes.Code
		path   string
		format int
		body   []byte
	}{
		{"write Package URI", codes.PUT, "/5/0/1", 0, []byte("coap://127.0.0.1:1/fw")},
		{"write Package", codes.PUT, "/5/0/0", 42, []byte("image")},
		{"execute Update", codes.POST, "/5/0/2", -1, nil},
		{"execute Cancel", codes.POST, "/5/0/10", -1, nil},
	} {
		rsp, err := lwm2mtest.Do(wctx, connB, tc.method, tc.path, tc.format, tc.body)
		if err != nil || rsp.Code != codes.Unauthorized {
			t.Errorf("server 2 (R only) %s: %v %v, want 4.01", tc.name, rsp.Code, err)
		}
	}
	if st, _ := obj.State(); st != fwupdate.StateIdle {
		t.Fatalf("State %v after server 2's refused requests, want Idle", st)
	}

	// Server 1 pushes an image: Downloaded, and both observers hear it.
	if rsp, err := lwm2mtest.Do(wctx, connA, codes.PUT, "/5/0/0", 42, []byte("image")); err != nil || rsp.Code != codes.Changed {
		t.Fatalf("server 1 writes Package: %v %v", rsp.Code, err)
	}
	for name, ch := range map[string]<-chan lwm2mtest.Response{"1": obsA, "2": obsB} {
		for got := ""; got != "2"; {
			select {
			case r := <-ch:
				got = string(r.Payload) // Downloading (1) may come first
			case <-wctx.Done():
				t.Fatalf("server %s not notified of Downloaded (last State %q)", name, got)
			}
		}
	}
	// Server 2 still may not execute Update on server 1's image.
	if rsp, err := lwm2mtest.Do(wctx, connB, codes.POST, "/5/0/2", -1, nil); err != nil || rsp.Code != codes.Unauthorized {
		t.Errorf("server 2 executes Update: %v %v, want 4.01", rsp.Code, err)
	}
}

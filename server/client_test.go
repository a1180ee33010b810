package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// TestWithLwM2MClient runs the project's own client against the server:
// registration, a TLV read decoded with the core types, a write, and an
// observation.
func TestWithLwM2MClient(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &server.Server{Addr: "127.0.0.1:0", Logger: quiet}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go s.Serve(ctx)

	c, err := lwm2m.New(lwm2m.Config{Endpoint: "go-client", Server: "coap://" + s.LocalAddr().String(),
		Lifetime: 120 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(cctx) }()
	defer func() { ccancel(); <-done }()

	for {
		if _, ok := s.Registration("go-client"); ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("client never registered")
		case <-time.After(20 * time.Millisecond):
		}
	}
	reg, _ := s.Registration("go-client")
	if reg.Lifetime != 120 {
		t.Errorf("lifetime %d", reg.Lifetime)
	}
	if _, err := reg.Objects(); err != nil {
		t.Errorf("objects %q: %v", reg.Links, err)
	}

	got, err := s.Read(ctx, "go-client", model.NewPath(1, 0), content.TLV)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := got.Records(model.NewPath(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	var lt model.Value
	for _, r := range recs {
		if r.Path == model.NewPath(1, 0, 1) {
			lt = r.Value
		}
	}
	if !lt.Equal(model.Int(120)) {
		t.Errorf("/1/0/1 = %v (%v) in %v", lt, lt.Type, recs)
	}

	notes := make(chan string, 8)
	o, err := s.Observe(ctx, "go-client", model.NewPath(1, 0, 1), content.TextPlain, func(n server.Notification) {
		notes <- string(n.Payload)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Cancel(ctx)
	if v := <-notes; v != "120" {
		t.Errorf("first notification %q", v)
	}
	if err := s.Write(ctx, "go-client", model.NewPath(1, 0, 1), content.TextPlain, []byte("300"), true); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-notes:
		if v != "300" {
			t.Errorf("notification %q", v)
		}
	case <-ctx.Done():
		t.Fatal("no notification after write")
	}

	_, err = s.Read(ctx, "go-client", model.NewPath(42, 0), content.TLV)
	var ce *server.CodeError
	if !errors.As(err, &ce) {
		t.Errorf("read of a missing object: %v", err)
	}
}

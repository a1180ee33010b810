package server

import (
	"context"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

// A request made between Listen and Serve waits until go-coap serves the
// socket and then goes out; one made on a server that is closed instead
// fails rather than waiting.
func TestRequestBeforeServe(t *testing.T) {
	st := &MemoryStore{}
	s1 := &Server{Store: st, Addr: "127.0.0.1:0", Logger: testLogger(t)}
	if err := s1.Listen(); err != nil {
		t.Fatal(err)
	}
	go s1.Serve(context.Background())
	addr := s1.LocalAddr().String()
	newFakeDevice(t, addr, "dev1")
	s1.Close()

	// The same port and store: dev1 is known but nothing serves yet.
	s2 := &Server{Store: st, Addr: addr, Logger: testLogger(t)}
	if err := s2.Listen(); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		c, err := s2.Read(ctxT(t), "dev1", mustPath("/3/0/0"), content.TextPlain)
		if err == nil && string(c.Payload) != "Acme" {
			t.Errorf("read %q", c.Payload)
		}
		read <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s2.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })
	if err := <-read; err != nil {
		t.Fatalf("read made before Serve: %v", err)
	}

	// Closed before it ever served: the request ends with the server.
	s3 := &Server{Store: st, Addr: "127.0.0.1:0", Logger: testLogger(t)}
	if err := s3.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := s3.Read(ctxT(t), "dev1", mustPath("/3/0/0"), content.TextPlain)
		read <- err
	}()
	s3.Close()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("read on a closed server succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read on a closed server did not end")
	}
}

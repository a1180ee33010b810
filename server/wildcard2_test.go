package server

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
)

// A device that registered to another address of this host than the
// one the route picks (127.0.0.2 here, a second interface address in
// the field) is still reached after the server restarts: the requests
// come from the address it registered to, which its connected socket
// insists on.
func TestWildcardRestartSecondAddress(t *testing.T) {
	db := filepath.Join(t.TempDir(), "reg.db")
	st, err := OpenBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	s1 := &Server{Store: st, Addr: ":0", Logger: testLogger(t)}
	if err := s1.Listen(); err != nil {
		t.Fatal(err)
	}
	go s1.Serve(context.Background())
	port := s1.LocalAddr().(*net.UDPAddr).Port
	newFakeDevice(t, net.JoinHostPort("127.0.0.2", strconv.Itoa(port)), "dev1")
	if _, err := s1.Read(ctxT(t), "dev1", mustPath("/3/0/0"), content.TextPlain); err != nil {
		t.Fatalf("read before restart: %v", err)
	}
	s1.Close()
	st.Close() // bbolt locks the file; Close leaves the caller's store open
	st2, err := OpenBoltStore(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st2.Close() }) // after the server's cleanup, which runs first
	s2 := startServer(t, &Server{Store: st2, Addr: ":" + strconv.Itoa(port), RequestTimeout: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s2.Read(ctx, "dev1", mustPath("/3/0/0"), content.TextPlain)
	if err != nil || string(c.Payload) != "Acme" {
		t.Fatalf("read after restart: %q %v", c.Payload, err)
	}
}

package lwm2m_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// udpTransport is a Transport over plain UDP: the core needs nothing
// from a Transport but a datagram net.Conn.
type udpTransport struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
}

func (u *udpTransport) Dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", u.addr)
	if err == nil {
		u.mu.Lock()
		u.conns = append(u.conns, c)
		u.mu.Unlock()
	}
	return c, err
}

// A client with a Transport registers and answers requests through the
// connection the Transport dials, and closes it when Run returns.
func TestTransportCarriesSession(t *testing.T) {
	srv := lwm2mtest.StartRaw(t)
	tr := &udpTransport{addr: strings.TrimPrefix(srv.URI(), "coap://")}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "tr", Server: "coaps://" + tr.addr, Transport: tr, Tx: fastTx,
		Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	reg, err := srv.WaitRegister(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(reg.Query, "ep=tr") {
		t.Errorf("register query %q lacks ep=tr", reg.Query)
	}
	resp, err := srv.Request(ctx, codes.GET, "/1/0/1")
	if err != nil || resp.Code != codes.Content {
		t.Fatalf("read /1/0/1 through the transport: %v %v", resp.Code, err)
	}
	cancel()
	<-done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.conns) == 0 {
		t.Fatal("the Transport was never dialled")
	}
	for _, nc := range tr.conns {
		if _, err := nc.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("connection still open after Run returned: write err = %v", err)
		}
	}
}

package lwm2m

import (
	"strconv"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

func TestDedupCache(t *testing.T) {
	p := pool.New(0, 0)
	c := newDedupCache(4)
	resp := func(tok string, code codes.Code) *pool.Message {
		m := p.AcquireMessage(t.Context())
		m.SetToken([]byte(tok))
		m.SetCode(code)
		m.SetMessageID(1)
		m.SetType(message.Acknowledgement)
		return m
	}
	if err := c.Store("7", resp("tok-a", codes.Continue)); err != nil {
		t.Fatal(err)
	}
	// A retransmission (same ID, same token) gets the stored answer.
	got := resp("tok-a", codes.Empty)
	if ok, err := c.Load("7", got); !ok || err != nil || got.Code() != codes.Continue {
		t.Fatalf("retransmission: ok=%v err=%v code=%v", ok, err, got.Code())
	}
	// Another request that reuses the ID is not a duplicate.
	if ok, _ := c.Load("7", resp("tok-b", codes.Empty)); ok {
		t.Fatal("a reused message ID with a new token was taken for a duplicate")
	}
	// The cache holds at most max entries, dropping the oldest.
	for i := range 10 {
		if err := c.Store(strconv.Itoa(100+i), resp("t"+strconv.Itoa(i), codes.Changed)); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.order.Len(); n != 4 {
		t.Fatalf("cache holds %d entries, want 4", n)
	}
	if ok, _ := c.Load("100", resp("t0", codes.Empty)); ok {
		t.Fatal("oldest entry was not evicted")
	}
	c.CheckExpirations(time.Now().Add(2 * exchangeLifetime))
	if n := c.order.Len(); n != 0 {
		t.Fatalf("%d entries after they expired", n)
	}
}

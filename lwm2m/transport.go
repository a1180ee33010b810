package lwm2m

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/udpsock"
	dtlsserver "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/monitor/inactivity"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/plgd-dev/go-coap/v3/udp/server"
)

// dialUDP connects to the server over UDP. It builds the go-coap
// connection as udp.Dial does, with two differences.
//
// The duplicate-detection cache: go-coap's default keeps every response
// for EXCHANGE_LIFETIME keyed by message ID alone, so a server that
// pushes more than 65536 blocks in four minutes (a 64 MiB image) reuses
// an ID and gets an old answer back, and the cache grows with the request
// rate. Ours is bounded and also compares the token, which a real
// retransmission repeats (RFC 7252 §4.5).
//
// The socket: where package udpsock works, a udpSession reads it with
// blocking system calls instead of Go's netpoller, and answers the middle
// blocks of a block-wise write itself (fast, may be nil). Through the
// netpoller every block of a push cost wake-ups and hand-offs between
// threads that took more time than the rest of the work.
func dialUDP(ctx context.Context, host string, handler client.HandlerFunc, tx TxParams, errs func(error), fast *block1Fast) (*client.Conn, error) {
	return dialUDPFrom(ctx, nil, host, handler, tx, errs, fast)
}

// dialUDPFrom is dialUDP from local address laddr (nil: any): a
// queue-mode session wakes on the port it slept on (queue.go).
func dialUDPFrom(ctx context.Context, laddr *net.UDPAddr, host string, handler client.HandlerFunc, tx TxParams, errs func(error), fast *block1Fast) (*client.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", host)
	if err != nil {
		return nil, err
	}
	conn := c.(*net.UDPConn)
	cfg := clientConfig(ctx, handler, tx, errs)

	// The net.Dialer resolved the host and picked the address as before;
	// the blocking socket connects to the same one.
	var session client.Session
	sock, err := replaceFrom(conn, laddr)
	if err != nil && laddr != nil {
		conn.Close()
		return nil, fmt.Errorf("bind %v: %w", laddr, err) // the caller decides whether another port will do
	}
	if err == nil {
		session = newUDPSession(ctx, sock, cfg.MaxMessageSize, cfg.MTU, errs, fast)
	} else {
		if !errors.Is(err, udpsock.ErrUnsupported) {
			errs(fmt.Errorf("blocking socket unavailable, using the netpoller: %w", err))
		}
		l := coapnet.NewUDPConn("udp", conn, coapnet.WithErrors(errs))
		// Its read buffer is its "MTU": make it hold any request up
		// to MaxMessageSize, as the udpSession does.
		session = server.NewSession(ctx, context.Background(), l, conn.RemoteAddr().(*net.UDPAddr),
			cfg.MaxMessageSize, uint16(min(cfg.MaxMessageSize, math.MaxUint16)), true, errs)
	}
	return startConn(session, &cfg), nil
}

// clientConfig is the go-coap configuration of the server connection,
// whatever carries it.
func clientConfig(ctx context.Context, handler client.HandlerFunc, tx TxParams, errs func(error)) client.Config {
	cfg := client.DefaultConfig
	for _, o := range []interface{ UDPClientApply(*client.Config) }{
		options.WithContext(ctx),
		options.WithHandlerFunc(handler),
		// Block-wise is ours: go-coap's mode would assemble firmware in memory.
		options.WithBlockwise(false, 0, 0),
		options.WithTransmission(1, tx.AckTimeout, uint32(tx.MaxRetransmit), tx.AckRandomFactor),
		// go-coap retransmits from its periodic runner, which ticks every
		// 4 s by default; tick well within ACK_TIMEOUT (RFC 7252 §4.2).
		options.WithPeriodicRunner(timerRunner(max(tx.AckTimeout/4, 10*time.Millisecond))),
		options.WithErrors(errs),
	} {
		o.UDPClientApply(&cfg)
	}
	cfg.CreateInactivityMonitor = func() client.InactivityMonitor { return inactivity.NewNilMonitor[*client.Conn]() }
	return cfg
}

// startConn runs CoAP over session.
func startConn(session client.Session, cfg *client.Config) *client.Conn {
	cc := client.NewConnWithOpts(session, cfg,
		client.WithBlockWise(func(*client.Conn) *blockwise.BlockWise[*client.Conn] { return nil }),
		client.WithInactivityMonitor(cfg.CreateInactivityMonitor()),
		client.WithRequestMonitor(cfg.RequestMonitor),
		client.WithResponseMessageCache(newDedupCache(dedupEntries)),
	)
	cfg.PeriodicRunner(func(now time.Time) bool {
		cc.CheckExpirations(now)
		return cc.Context().Err() == nil
	})
	go func() {
		if err := cc.Run(); err != nil {
			cfg.Errors(err)
		}
	}()
	return cc
}

// Transport opens the connection to a server whose URI scheme is not
// coap. Package coaps provides one for coaps (DTLS 1.2).
type Transport interface {
	// Dial returns a connection to the server on which each Read returns
	// one datagram and each Write sends one. The client closes it when
	// it is done with it, and at the latest when ctx ends.
	Dial(ctx context.Context) (net.Conn, error)
}

// dialTransport opens the server connection through t and runs CoAP over
// it, closing it when ctx ends.
func dialTransport(ctx context.Context, t Transport, handler client.HandlerFunc, tx TxParams, errs func(error)) (*client.Conn, error) {
	nc, err := t.Dial(ctx)
	if err != nil {
		return nil, err
	}
	cfg := clientConfig(ctx, handler, tx, errs)
	// The read buffer is the session's "MTU": make it hold any request up
	// to MaxMessageSize; the transport may deliver less (pion: 8 KiB).
	session := dtlsserver.NewSession(ctx, coapnet.NewConn(nc), cfg.MaxMessageSize,
		uint16(min(cfg.MaxMessageSize, math.MaxUint16)), true)
	cc := startConn(session, &cfg)
	stop := context.AfterFunc(ctx, func() { _ = cc.Close() })
	go func() {
		<-cc.Done()
		stop()
	}()
	return cc, nil
}

// timerRunner is a go-coap periodic runner that costs no goroutine while
// idle: each registered function runs from a timer until it returns
// false. A fleet of clients in one process keeps thousands of these.
func timerRunner(tick time.Duration) func(f func(now time.Time) bool) {
	return func(f func(now time.Time) bool) {
		if f == nil {
			return
		}
		var t *time.Timer
		t = time.AfterFunc(tick, func() {
			if f(time.Now()) {
				t.Reset(tick)
			}
		})
	}
}

// dedupEntries bounds the responses kept for duplicate detection. A server
// sends one request at a time (NSTART 1), so a few hundred cover every
// retransmission it can still make.
const dedupEntries = 512

// exchangeLifetime is EXCHANGE_LIFETIME with default parameters (RFC 7252 §4.8.2).
const exchangeLifetime = 247 * time.Second

type dedupEntry struct {
	key     string
	token   string
	raw     []byte
	expires time.Time
}

// dedupCache implements go-coap's client.MessageCache.
type dedupCache struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*list.Element
	order *list.List // oldest first
}

func newDedupCache(max int) *dedupCache {
	return &dedupCache{max: max, byKey: make(map[string]*list.Element), order: list.New()}
}

// Load finds the answer to a retransmitted request. msg arrives with the
// new request's token set; an entry with another token is an unrelated
// request that reused the message ID.
func (c *dedupCache) Load(key string, msg *pool.Message) (bool, error) {
	c.mu.Lock()
	el, ok := c.byKey[key]
	var e *dedupEntry
	if ok {
		e = el.Value.(*dedupEntry)
		if e.token != string(msg.Token()) || time.Now().After(e.expires) {
			c.order.Remove(el)
			delete(c.byKey, key)
			ok = false
		}
	}
	c.mu.Unlock()
	if !ok {
		return false, nil
	}
	if _, err := msg.UnmarshalWithDecoder(coder.DefaultCoder, e.raw); err != nil {
		return false, fmt.Errorf("dedup cache: %w", err)
	}
	return true, nil
}

func (c *dedupCache) Store(key string, msg *pool.Message) error {
	raw, err := msg.MarshalWithEncoder(coder.DefaultCoder)
	if err != nil {
		return err
	}
	e := &dedupEntry{key: key, token: string(msg.Token()), raw: append([]byte(nil), raw...), expires: time.Now().Add(exchangeLifetime)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		c.order.Remove(el)
	}
	c.byKey[key] = c.order.PushBack(e)
	for c.order.Len() > c.max {
		old := c.order.Remove(c.order.Front()).(*dedupEntry)
		delete(c.byKey, old.key)
	}
	return nil
}

func (c *dedupCache) CheckExpirations(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.order.Front(); el != nil; el = c.order.Front() {
		e := el.Value.(*dedupEntry)
		if now.Before(e.expires) {
			return
		}
		c.order.Remove(el)
		delete(c.byKey, e.key)
	}
}

// replaceFrom is udpsock.Replace binding laddr, when set.
func replaceFrom(conn *net.UDPConn, laddr *net.UDPAddr) (*udpsock.Conn, error) {
	if laddr == nil {
		return udpsock.Replace(conn, sessionTick)
	}
	sock, err := udpsock.Dial(laddr.AddrPort(), conn.RemoteAddr().(*net.UDPAddr).AddrPort(), sessionTick)
	if err != nil {
		return nil, err
	}
	conn.Close()
	return sock, nil
}

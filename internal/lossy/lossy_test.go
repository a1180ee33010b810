package lossy

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// echoServer replies to every datagram with the same bytes and records what
// it saw, in order.
type echoServer struct {
	conn *net.UDPConn
	mu   sync.Mutex
	seen []string
	done chan struct{}
}

func newEcho(t *testing.T) *echoServer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{conn: c, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.seen = append(e.seen, string(buf[:n]))
			e.mu.Unlock()
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-e.done })
	return e
}

func (e *echoServer) addr() *net.UDPAddr { return e.conn.LocalAddr().(*net.UDPAddr) }

func (e *echoServer) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.seen)
}

func newProxy(t *testing.T, upstream *net.UDPAddr, cfg Config) *Proxy {
	t.Helper()
	p, err := New(context.Background(), upstream, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *net.UDPConn, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.Write([]byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// recv reads exactly n datagrams; the deadline only guards against a hang.
func recv(t *testing.T, c *net.UDPConn, n int) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 1<<16)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < n {
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), n, err)
		}
		got = append(got, string(buf[:k]))
	}
	return got
}

// waitFor polls cond; the deadline only guards against a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func seq(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}

func TestForwardsEverything(t *testing.T) {
	const n = 100
	e := newEcho(t)
	p := newProxy(t, e.addr(), Config{Seed: 1})
	c := dial(t, p)
	send(t, c, n)
	got := recv(t, c, n)
	if !slices.Equal(got, seq(n)) {
		t.Errorf("client got %v", got)
	}
	if !slices.Equal(e.got(), seq(n)) {
		t.Errorf("server saw %v", e.got())
	}
	want := DirStats{Received: n, Forwarded: n}
	if s := p.Stats(); s.Up != want || s.Down != want {
		t.Errorf("stats %+v, want %+v both ways", s, want)
	}
}

func TestLossAll(t *testing.T) {
	const n = 50
	e := newEcho(t)
	p := newProxy(t, e.addr(), Config{Loss: 1})
	c := dial(t, p)
	send(t, c, n)
	waitFor(t, "the proxy to read every datagram", func() bool { return p.Stats().Up.Received == n })
	if got := e.got(); len(got) != 0 {
		t.Errorf("server saw %v", got)
	}
	if s := p.Stats(); s.Up != (DirStats{Received: n, Dropped: n}) || s.Down != (DirStats{}) {
		t.Errorf("stats %+v", s)
	}
	// Back to no loss: traffic flows again.
	p.SetConfig(Config{})
	send(t, c, 1)
	if got := recv(t, c, 1); got[0] != "0" {
		t.Errorf("after SetConfig got %v", got)
	}
	if got := e.got(); !slices.Equal(got, []string{"0"}) {
		t.Errorf("server saw %v", got)
	}
}

func TestDuplicateAll(t *testing.T) {
	const n = 20
	e := newEcho(t)
	p := newProxy(t, e.addr(), Config{Duplicate: 1})
	c := dial(t, p)
	send(t, c, n)
	// Doubled on the way up, and each echo doubled on the way down.
	got := recv(t, c, 4*n)
	waitFor(t, "the server to see every copy", func() bool { return len(e.got()) == 2*n })
	for i := range n {
		s := strconv.Itoa(i)
		if k := count(e.got(), s); k != 2 {
			t.Errorf("server saw %q %d times, want 2", s, k)
		}
		if k := count(got, s); k != 4 {
			t.Errorf("client got %q %d times, want 4", s, k)
		}
	}
	s := p.Stats()
	if s.Up != (DirStats{Received: n, Forwarded: 2 * n, Duplicated: n}) ||
		s.Down != (DirStats{Received: 2 * n, Forwarded: 4 * n, Duplicated: 2 * n}) {
		t.Errorf("stats %+v", s)
	}
}

func count(s []string, v string) int {
	k := 0
	for _, x := range s {
		if x == v {
			k++
		}
	}
	return k
}

func TestReorderAll(t *testing.T) {
	const n = 10
	e := newEcho(t)
	p := newProxy(t, e.addr(), Config{Reorder: 1})
	c := dial(t, p)
	send(t, c, n)
	// Up: each pair swapped. Down: swapped again, so back in order.
	got := recv(t, c, n)
	want := []string{"1", "0", "3", "2", "5", "4", "7", "6", "9", "8"}
	if !slices.Equal(e.got(), want) {
		t.Errorf("server saw %v, want %v", e.got(), want)
	}
	if !slices.Equal(got, seq(n)) {
		t.Errorf("client got %v", got)
	}
	s := p.Stats()
	if s.Up != (DirStats{Received: n, Forwarded: n, Reordered: n / 2}) || s.Down != s.Up {
		t.Errorf("stats %+v", s)
	}
}

func TestDelayKeepsOrder(t *testing.T) {
	const n = 30
	e := newEcho(t)
	p := newProxy(t, e.addr(), Config{Delay: 5 * time.Millisecond})
	c := dial(t, p)
	send(t, c, n)
	if got := recv(t, c, n); !slices.Equal(got, seq(n)) {
		t.Errorf("client got %v", got)
	}
}

func TestJitterDeliversEverything(t *testing.T) {
	const n = 30
	e := newEcho(t)
	p := newProxy(t, e.addr(), Config{Delay: 2 * time.Millisecond, Jitter: 2 * time.Millisecond, Seed: 3})
	c := dial(t, p)
	send(t, c, n)
	got := recv(t, c, n)
	slices.SortFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
	if !slices.Equal(got, seq(n)) {
		t.Errorf("client got %v", got)
	}
}

// TestSeedReproducible runs the same traffic through two proxies with the
// same seed and one with another seed, and compares what got through.
func TestSeedReproducible(t *testing.T) {
	const n = 200
	run := func(seed int64) (upSeen, downGot []string) {
		e := newEcho(t)
		p := newProxy(t, e.addr(), Config{Loss: 0.3, Duplicate: 0.2, Seed: seed})
		c := dial(t, p)
		send(t, c, n)
		waitFor(t, "every datagram to go up", func() bool {
			s := p.Stats()
			return s.Up.Received == n && s.Up.Forwarded == n-s.Up.Dropped+s.Up.Duplicated
		})
		waitFor(t, "every echo to go down", func() bool {
			s := p.Stats()
			return s.Down.Received == s.Up.Forwarded && s.Down.Forwarded == s.Down.Received-s.Down.Dropped+s.Down.Duplicated
		})
		s := p.Stats()
		downGot = recv(t, c, int(s.Down.Forwarded))
		if got := e.got(); uint64(len(got)) != s.Up.Forwarded {
			t.Fatalf("server saw %d datagrams, stats say %d forwarded", len(got), s.Up.Forwarded)
		}
		return e.got(), downGot
	}
	up1, down1 := run(42)
	up2, down2 := run(42)
	up3, _ := run(43)
	if !slices.Equal(up1, up2) || !slices.Equal(down1, down2) {
		t.Errorf("same seed, different outcomes:\n%v\n%v", up1, up2)
	}
	if slices.Equal(up1, up3) {
		t.Errorf("seeds 42 and 43 gave the same %d-datagram outcome", len(up1))
	}
	if len(up1) == 0 || len(down1) >= len(up1)*2 {
		t.Errorf("lossy run let %d up and %d down of %d", len(up1), len(down1), n)
	}
}

func TestManyClients(t *testing.T) {
	const clients, n = 4, 50
	e := newEcho(t)
	p := newProxy(t, e.addr(), Config{})
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for k := range clients {
		c := dial(t, p)
		wg.Go(func() {
			want := make([]string, n)
			for i := range n {
				want[i] = fmt.Sprintf("%d-%d", k, i)
				c.Write([]byte(want[i]))
			}
			buf := make([]byte, 100)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for i := range n {
				m, err := c.Read(buf)
				if err != nil {
					errs <- err
					return
				}
				if string(buf[:m]) != want[i] {
					errs <- fmt.Errorf("client %d got %q, want %q", k, buf[:m], want[i])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := p.Stats(); s.Up.Forwarded != clients*n || s.Down.Forwarded != clients*n {
		t.Errorf("stats %+v", s)
	}
}

func TestBadConfig(t *testing.T) {
	e := newEcho(t)
	for _, cfg := range []Config{{Loss: -0.1}, {Duplicate: 1.5}, {Reorder: 2}, {Delay: -1}, {Jitter: -1}} {
		if p, err := New(context.Background(), e.addr(), cfg); err == nil {
			p.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	p := newProxy(t, e.addr(), Config{})
	if err := p.SetConfig(Config{Loss: 2}); err == nil {
		t.Error("SetConfig accepted Loss 2")
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	e := newEcho(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := New(ctx, e.addr(), Config{Reorder: 1, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c, err := net.DialUDP("udp", nil, p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("held"))
		c.Write([]byte("delayed"))
		defer c.Close()
	}
	waitFor(t, "three sessions", func() bool { return p.Stats().Up.Received == 6 })
	p.Close()
	p.Close() // idempotent
	// The echo server's goroutine is the only one left of ours.
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before+1 })
}

func TestContextCancelCloses(t *testing.T) {
	e := newEcho(t)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := New(ctx, e.addr(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	waitFor(t, "the proxy to close", p.isClosed)
	p.Close()
	if _, _, err := p.conn.ReadFromUDP(make([]byte, 1)); err == nil {
		t.Error("listener still open after the context was cancelled")
	}
}

// Package lossy is a UDP proxy that loses, duplicates, reorders and delays
// datagrams, for testing how the client copes with a bad network: CoAP over
// UDP must survive all four (RFC 7252 §4.2, §4.5), and so must block-wise
// transfers (RFC 7959 §2.5).
//
// A test starts a Proxy in front of a server and points the client at
// Proxy.Addr instead of the server.
package lossy

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Config says what happens to each datagram, in each direction separately.
type Config struct {
	// Loss is the probability, 0 to 1, that a datagram is dropped.
	Loss float64
	// Duplicate is the probability that a datagram is sent twice.
	Duplicate float64
	// Reorder is the probability that a datagram is held back and sent
	// right after the next datagram in the same direction for the same
	// client. At most one datagram per direction and client is held.
	Reorder float64
	// Delay is added to every datagram; Jitter adds a uniformly random
	// amount in [-Jitter, +Jitter] on top. Jitter can reorder datagrams.
	Delay, Jitter time.Duration
	// Seed seeds the random choices. Given the same seed, the same
	// sequence of datagrams in one direction meets the same fate; SetConfig
	// does not reseed.
	Seed int64
}

// DirStats counts datagrams in one direction.
type DirStats struct {
	Received   uint64 // read by the proxy
	Forwarded  uint64 // written out, duplicates included; counted just before the write
	Dropped    uint64 // lost on purpose
	Duplicated uint64 // sent an extra time
	Reordered  uint64 // held back behind the next datagram
}

// Stats counts datagrams in both directions. Up is from clients to the
// upstream server, Down from the server back to clients.
type Stats struct {
	Up, Down DirStats
}

const (
	up   = 0
	down = 1
)

// A Proxy relays UDP datagrams between clients and one upstream server,
// mistreating them as its Config says. It keeps one upstream socket per
// client address, so that the server's replies find their way back. It is
// safe for concurrent use.
type Proxy struct {
	conn     *net.UDPConn // clients talk to this
	upstream *net.UDPAddr
	cancel   context.CancelFunc
	stopCtx  func() bool
	wg       sync.WaitGroup
	wake     chan struct{}
	once     sync.Once

	mu       sync.Mutex
	cfg      Config
	rng      [2]*rand.Rand
	sessions map[netip.AddrPort]*session
	stats    Stats
	queue    delayQueue
	seq      uint64
	closed   bool
}

type session struct {
	client netip.AddrPort
	up     *net.UDPConn // connected to the upstream server
	held   [2][]byte    // datagram held back for reordering, per direction
}

// New starts a proxy for upstream listening on 127.0.0.1 on a free port.
// It runs until Close is called or ctx is done.
func New(ctx context.Context, upstream *net.UDPAddr, cfg Config) (*Proxy, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("lossy: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Proxy{
		conn:     conn,
		upstream: upstream,
		cancel:   cancel,
		wake:     make(chan struct{}, 1),
		cfg:      cfg,
		sessions: make(map[netip.AddrPort]*session),
	}
	// Two streams, so that the fate of datagrams in one direction does not
	// depend on how they interleave with the other.
	p.rng[up] = rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5eed0))
	p.rng[down] = rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5eed1))
	p.wg.Add(2)
	go p.readClients()
	go p.runQueue(ctx)
	p.stopCtx = context.AfterFunc(ctx, func() { p.Close() })
	return p, nil
}

func (c Config) check() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"Loss", c.Loss}, {"Duplicate", c.Duplicate}, {"Reorder", c.Reorder}} {
		if !(f.v >= 0 && f.v <= 1) {
			return fmt.Errorf("lossy: %s = %v, want 0..1", f.name, f.v)
		}
	}
	if c.Delay < 0 || c.Jitter < 0 {
		return errors.New("lossy: negative Delay or Jitter")
	}
	return nil
}

// Addr is the address clients should send to.
func (p *Proxy) Addr() *net.UDPAddr {
	return p.conn.LocalAddr().(*net.UDPAddr)
}

// SetConfig changes the behaviour from the next datagram on. The Seed field
// is ignored: the random streams carry on.
func (p *Proxy) SetConfig(cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfg = cfg
	return nil
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Close stops the proxy and waits for its goroutines to end. Datagrams held
// back or delayed are discarded.
func (p *Proxy) Close() error {
	p.once.Do(func() {
		p.stopCtx()
		p.cancel()
		p.mu.Lock()
		p.closed = true
		p.conn.Close()
		for _, s := range p.sessions {
			s.up.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return nil
}

func (p *Proxy) readClients() {
	defer p.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if p.isClosed() {
				return
			}
			continue // e.g. a truncated datagram; UDP has no fatal read errors short of Close
		}
		s, err := p.session(from)
		if err != nil {
			continue // cannot reach upstream: as good as lost
		}
		p.handle(up, s, buf[:n])
	}
}

// session returns the session for a client, creating it if needed.
func (p *Proxy) session(client netip.AddrPort) (*session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.sessions[client]; ok {
		return s, nil
	}
	if p.closed {
		return nil, net.ErrClosed
	}
	c, err := net.DialUDP("udp", nil, p.upstream)
	if err != nil {
		return nil, err
	}
	s := &session{client: client, up: c}
	p.sessions[client] = s
	p.wg.Add(1)
	go p.readUpstream(s)
	return s, nil
}

func (p *Proxy) readUpstream(s *session) {
	defer p.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, err := s.up.Read(buf)
		if err != nil {
			if p.isClosed() {
				return
			}
			continue // ICMP port unreachable surfaces here as ECONNREFUSED
		}
		p.handle(down, s, buf[:n])
	}
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// handle decides the fate of one datagram. Reads in each direction are
// sequential per client, so datagrams are handled in arrival order.
func (p *Proxy) handle(dir int, s *session, b []byte) {
	data := append([]byte(nil), b...)
	p.mu.Lock()
	cfg, r := p.cfg, p.rng[dir]
	st := &p.stats.Up
	if dir == down {
		st = &p.stats.Down
	}
	st.Received++
	// Always the same draws per datagram, so that its fate depends only on
	// its position in the sequence, not on what happened to the others.
	lossU, dupU, reoU := r.Float64(), r.Float64(), r.Float64()
	jitter := [2]float64{r.Float64()*2 - 1, r.Float64()*2 - 1}

	var out [][]byte
	held := s.held[dir]
	s.held[dir] = nil
	switch {
	case lossU < cfg.Loss:
		st.Dropped++
	case held == nil && reoU < cfg.Reorder:
		s.held[dir] = data
		st.Reordered++
	default:
		out = append(out, data)
		if dupU < cfg.Duplicate {
			out = append(out, data)
			st.Duplicated++
		}
	}
	if held != nil {
		out = append(out, held)
	}

	var now []outgoing
	t := time.Now()
	for i, d := range out {
		o := outgoing{dir: dir, s: s, data: d}
		delay := cfg.Delay + time.Duration(jitter[min(i, 1)]*float64(cfg.Jitter))
		if delay <= 0 {
			now = append(now, o)
			continue
		}
		o.at = t.Add(delay)
		o.seq = p.seq
		p.seq++
		heap.Push(&p.queue, o)
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	p.mu.Unlock()
	for _, o := range now {
		p.send(o)
	}
}

type outgoing struct {
	at   time.Time
	seq  uint64 // keeps datagrams due at the same time in order
	dir  int
	s    *session
	data []byte
}

func (p *Proxy) send(o outgoing) {
	// Count first, so that a receiver never sees a datagram the stats do
	// not yet show; take it back if the write fails.
	p.count(o.dir, 1)
	var err error
	if o.dir == up {
		_, err = o.s.up.Write(o.data)
	} else {
		_, err = p.conn.WriteToUDPAddrPort(o.data, o.s.client)
	}
	if err != nil {
		p.count(o.dir, ^uint64(0))
	}
}

// count adds delta (two's complement for -1) to the Forwarded count of dir.
func (p *Proxy) count(dir int, delta uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if dir == up {
		p.stats.Up.Forwarded += delta
	} else {
		p.stats.Down.Forwarded += delta
	}
}

// runQueue sends delayed datagrams when they are due.
func (p *Proxy) runQueue(ctx context.Context) {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		var due []outgoing
		now := time.Now()
		for len(p.queue) > 0 && !p.queue[0].at.After(now) {
			due = append(due, heap.Pop(&p.queue).(outgoing))
		}
		wait := time.Hour
		if len(p.queue) > 0 {
			wait = p.queue[0].at.Sub(now)
		}
		p.mu.Unlock()
		for _, o := range due {
			p.send(o)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-timer.C:
		}
	}
}

// delayQueue is a min-heap of datagrams by due time, then arrival.
type delayQueue []outgoing

func (q delayQueue) Len() int { return len(q) }
func (q delayQueue) Less(i, j int) bool {
	if q[i].at.Equal(q[j].at) {
		return q[i].seq < q[j].seq
	}
	return q[i].at.Before(q[j].at)
}
func (q delayQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *delayQueue) Push(x any)   { *q = append(*q, x.(outgoing)) }
func (q *delayQueue) Pop() any {
	old := *q
	o := old[len(old)-1]
	old[len(old)-1] = outgoing{}
	*q = old[:len(old)-1]
	return o
}

package download

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// getCoAP fetches a coap or coaps URI with Block2 over one datagram connection.
func getCoAP(ctx context.Context, u *url.URL, req *Request, t *transfer) error {
	conn, err := dialDatagram(ctx, u, req)
	if err != nil {
		return err
	}
	defer conn.close()
	// Cancellation wakes a pending read at once.
	stop := context.AfterFunc(ctx, conn.interrupt)
	defer stop()

	c, err := newBlockClient(conn, u, req)
	if err != nil {
		return err
	}
	err = runBlocks(ctx, c, c.szx, t)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func dialDatagram(ctx context.Context, u *url.URL, req *Request) (datagramConn, error) {
	if u.Scheme == "coaps" {
		conn, err := dialDTLS(ctx, u, req)
		if err != nil {
			return nil, err
		}
		return &netDatagram{conn: conn}, nil
	}
	return dialUDP(ctx, coapuri.HostPort(u), req.Tx, req.Resolver)
}

// Block2 request and response handling over a datagram conn (UDP or DTLS),
// shared by coap and coaps. Up to window requests are in flight at once;
// buffers are allocated once per connection so the steady state allocates
// nothing per block.
type blockClient struct {
	conn    datagramConn
	tx      TxParams
	sepWait time.Duration
	szx     uint32

	base     message.Options // Uri-Path and Uri-Query, in option order
	reqOpts  message.Options // base + Block2 (+ Size2), reused per request
	blockVal [3]byte
	in       []byte
	ack      [4]byte
	msg      message.Message

	mid   uint16
	token [8]byte // random prefix; the last 4 bytes count requests
	seq   uint32

	// The window: slots[(head+i)%len(slots)], i < count, are the requests
	// in flight or answered but not yet handed out, for consecutive blocks.
	slots       []slot
	head, count int
	// size is the image size the server gave in Size2 in this run, or -1.
	// Without it the end is unknown and nothing is requested ahead.
	size int64
	// echo is the Echo value the next request carries, once; echoes
	// counts the requests repeated with one.
	echo   []byte
	echoes int
}

// slot is one Block2 request of the window and, once answered, its
// response, copied out of the receive buffer.
type slot struct {
	num, szx    uint32
	mid         uint16
	seq         uint32
	out         []byte // the encoded request, kept for retransmission
	deadline    time.Time
	timeout     time.Duration
	retransmits int
	acked       bool // an empty ACK came: a separate response will follow
	done        bool
	resp        response
	payload     []byte // backing store of resp.payload
	etag        []byte // backing store of resp.etag
}

// Room for a block of up to 1024 bytes plus any options a server may add.
const datagramBufSize = 64 << 10

// MaxWindow bounds Request.Window: more Block2 requests than this are never
// in flight at once.
const MaxWindow = 64

func newBlockClient(conn datagramConn, u *url.URL, req *Request) (*blockClient, error) {
	szx, err := szxOf(req.BlockSize)
	if err != nil {
		return nil, err
	}
	window := min(max(req.Window, 1), MaxWindow)
	c := &blockClient{
		conn:    conn,
		tx:      req.Tx,
		sepWait: req.Timeout,
		szx:     szx,
		in:      make([]byte, datagramBufSize),
		slots:   make([]slot, window),
		size:    -1,
	}
	c.msg.Options = make(message.Options, 0, 64)
	if c.base, err = uriOptions(u); err != nil {
		return nil, err
	}
	c.reqOpts = make(message.Options, 0, len(c.base)+2)
	var rnd [4]byte
	if _, err := rand.Read(c.token[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	c.mid = binary.BigEndian.Uint16(rnd[:])
	return c, nil
}

// uriOptions turns the URI's path and query into Uri-Path and Uri-Query
// options (RFC 7252 §6.4).
func uriOptions(u *url.URL) (message.Options, error) {
	var opts message.Options
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	if path != "" {
		for _, seg := range strings.Split(path, "/") {
			s, err := url.PathUnescape(seg)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalidURI, err)
			}
			if len(s) > 255 {
				return nil, fmt.Errorf("%w: path segment longer than 255 bytes", ErrInvalidURI)
			}
			opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(s)})
		}
	}
	if u.RawQuery != "" {
		for _, q := range strings.Split(u.RawQuery, "&") {
			s, err := url.QueryUnescape(q)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalidURI, err)
			}
			opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(s)})
		}
	}
	return opts, nil
}

// encodeBlock writes a Block option value (RFC 7959 §2.2) into buf and
// returns its minimal-length encoding.
func encodeBlock(buf *[3]byte, num uint32, more bool, szx uint32) []byte {
	v := num<<4 | szx&7
	if more {
		v |= 8
	}
	switch {
	case v == 0:
		return buf[:0]
	case v < 1<<8:
		buf[0] = byte(v)
		return buf[:1]
	case v < 1<<16:
		buf[0], buf[1] = byte(v>>8), byte(v)
		return buf[:2]
	default:
		buf[0], buf[1], buf[2] = byte(v>>16), byte(v>>8), byte(v)
		return buf[:3]
	}
}

// decodeBlock parses a Block1/Block2 option value (RFC 7959 §2.2).
func decodeBlock(v []byte) (num uint32, more bool, szx uint32, err error) {
	if len(v) > 3 {
		return 0, false, 0, fmt.Errorf("%w: block option of %d bytes", ErrProtocol, len(v))
	}
	var x uint32
	for _, b := range v {
		x = x<<8 | uint32(b)
	}
	return x >> 4, x&8 != 0, x & 7, nil
}

func decodeUint(v []byte) (uint64, bool) {
	if len(v) > 8 {
		return 0, false
	}
	var x uint64
	for _, b := range v {
		x = x<<8 | uint64(b)
	}
	return x, true
}

// response is what the block loop needs from a response; slices point into
// the receive buffer and are valid until the next read.
type response struct {
	code     codes.Code
	etag     []byte
	hasBlock bool
	num      uint32
	more     bool
	szx      uint32
	size     int64  // Size2, or -1
	echo     []byte // an Echo option (RFC 9175), or nil
	payload  []byte
}

// parseResponse extracts the Block2, ETag and Size2 options of a decoded
// response. It never panics on hostile input.
func parseResponse(m *message.Message, r *response) error {
	*r = response{code: m.Code, size: -1, payload: m.Payload}
	for _, o := range m.Options {
		switch o.ID {
		case message.ETag:
			if r.etag == nil {
				r.etag = o.Value
			}
		case message.Block2:
			num, more, szx, err := decodeBlock(o.Value)
			if err != nil {
				return err
			}
			r.hasBlock, r.num, r.more, r.szx = true, num, more, szx
		case message.Size2:
			if v, ok := decodeUint(o.Value); ok && v < 1<<62 {
				r.size = int64(v)
			}
		case optionEcho:
			r.echo = o.Value
		}
	}
	return nil
}

// optionEcho is the Echo option (RFC 9175 §2.2.1). A server that will not
// send a large answer to an address it has not verified (RFC 7252 §11.3;
// lwm2m server's image port does this) answers 4.01 Unauthorized with an
// Echo, and serves the request repeated with that Echo (§2.3).
const optionEcho message.OptionID = 252

// maxEchoes bounds how often one transfer repeats a request with an
// Echo: a server that keeps asking is refusing, not verifying.
const maxEchoes = 3

// statusError maps a non-2.05 response code to an error.
func statusError(code codes.Code) error {
	if code == codes.NotFound {
		return fmt.Errorf("%w: CoAP %s", ErrNotFound, codeString(code))
	}
	return fmt.Errorf("%w: CoAP %s", ErrProtocol, codeString(code))
}

func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d %v", c>>5, c&31, c)
}

// exchanger performs one Block2 request and returns the response. The
// response is valid until the next call.
type exchanger interface {
	exchange(ctx context.Context, num, szx uint32, first bool) (*response, error)
}

// bertSZX is the SZX value of BERT blocks: multiples of 1024 bytes (RFC 8323 §6).
const bertSZX = 7

func blockUnit(szx uint32) int64 {
	if szx == bertSZX {
		return 1024
	}
	return 16 << szx
}

// runBlocks drives a Block2 transfer (RFC 7959 §2.4), starting at
// t.resumeAt with block size exponent szx0. It checks the ETag of every
// block and starts again from block 0 when it changes.
func runBlocks(ctx context.Context, ex exchanger, szx0 uint32, t *transfer) error {
	szx := szx0
	unit := blockUnit(szx)
	num := uint32(t.resumeAt / unit)
	startOfRun := true
	for {
		r, err := ex.exchange(ctx, num, szx, startOfRun)
		if err != nil {
			return err
		}
		if r.code != codes.Content {
			return statusError(r.code)
		}
		if !r.hasBlock {
			// Whole body in one response (RFC 7959 §2.4: a server may ignore Block2).
			if err := t.open(ctx, r.etag, 0, int64(len(r.payload))); err != nil {
				return err
			}
			return t.write(r.payload)
		}
		// A server may answer with a smaller block than asked (RFC 7959 §2.4),
		// never a larger one; BERT only when asked for.
		if r.szx > szx || (r.szx == bertSZX) != (szx == bertSZX) {
			return fmt.Errorf("%w: server answered block size exponent %d to a request for %d", ErrProtocol, r.szx, szx)
		}
		runit := blockUnit(r.szx)
		off := int64(r.num) * runit
		if want := int64(num) * unit; off != want {
			return fmt.Errorf("%w: asked for offset %d, got block at %d", ErrProtocol, want, off)
		}
		plen := int64(len(r.payload))
		switch {
		case r.szx == bertSZX && r.more && (plen == 0 || plen%runit != 0):
			return fmt.Errorf("%w: BERT block %d has %d bytes", ErrProtocol, r.num, plen)
		case r.szx != bertSZX && ((r.more && plen != runit) || plen > runit):
			return fmt.Errorf("%w: block %d has %d bytes, block size %d", ErrProtocol, r.num, plen, runit)
		}
		switch {
		case startOfRun && off == 0:
			if err := t.open(ctx, r.etag, 0, r.size); err != nil {
				return err
			}
		case startOfRun:
			// Resume only under the very same, non-empty ETag.
			if len(r.etag) == 0 || !bytes.Equal(r.etag, t.wantETag) {
				if err := t.restartAllowed(); err != nil {
					return err
				}
				if t.pos <= 0 {
					t.restarts++
				}
				num, t.wantETag = 0, nil
				continue
			}
			if err := t.open(ctx, r.etag, off, r.size); err != nil {
				return err
			}
		case !bytes.Equal(r.etag, t.etag):
			// The resource changed under us: start again (RFC 7252 §5.10.6).
			if err := t.restartAllowed(); err != nil {
				return err
			}
			num, szx, unit, startOfRun = 0, szx0, blockUnit(szx0), true
			continue
		}
		startOfRun = false
		if err := t.write(r.payload); err != nil {
			return err
		}
		if !r.more {
			return nil
		}
		szx, unit = r.szx, runit
		if szx == bertSZX {
			num = r.num + uint32(plen/runit)
		} else {
			num = r.num + 1
		}
	}
}

// exchange returns the response for block num, sending a CON GET for it
// unless one is already in flight, and keeps up to len(c.slots) requests
// for the following blocks in flight (RFC 7252 §4.7 NSTART, RFC 9177 §2).
// Each request is retransmitted on its own with exponential back-off
// (RFC 7252 §4.2); piggybacked and separate responses are accepted (§5.2).
func (c *blockClient) exchange(ctx context.Context, num, szx uint32, first bool) (*response, error) {
	if first {
		c.size = -1
	}
	if first || c.count == 0 || c.slots[c.head].num != num || c.slots[c.head].szx != szx {
		// Not the block the window was fetching (a restart, a resume or a
		// smaller block size): forget it. Late answers to forgotten
		// requests match no token and are dropped.
		c.count = 0
		if err := c.push(num, szx, first); err != nil {
			return nil, err
		}
	}
	for {
		if err := c.fill(); err != nil {
			return nil, err
		}
		s := &c.slots[c.head]
		if s.done && s.resp.code == codes.Unauthorized && len(s.resp.echo) > 0 && c.echoes < maxEchoes {
			// Repeat the request with the server's Echo (RFC 9175 §2.3).
			c.echoes++
			c.echo = append(c.echo[:0], s.resp.echo...)
			c.count = 0
			if err := c.push(num, szx, first); err != nil {
				return nil, err
			}
			continue
		}
		if s.done {
			// s stays untouched until the next call fills the window.
			c.head = (c.head + 1) % len(c.slots)
			c.count--
			return &s.resp, nil
		}
		if err := c.wait(ctx); err != nil {
			return nil, err
		}
	}
}

// fill tops the window up with requests for the blocks after the last one
// in it, but only up to the end of the image as Size2 gave it.
func (c *blockClient) fill() error {
	if c.size < 0 || c.count == 0 || c.count >= len(c.slots) {
		return nil
	}
	last := &c.slots[(c.head+c.count-1)%len(c.slots)]
	lastNum := int64(0)
	if c.size > 0 {
		lastNum = (c.size - 1) / blockUnit(last.szx)
	}
	for next, szx := int64(last.num)+1, last.szx; c.count < len(c.slots) && next <= lastNum; next++ {
		if err := c.push(uint32(next), szx, false); err != nil {
			return err
		}
	}
	return nil
}

// push sends a request for block num and appends it to the window.
func (c *blockClient) push(num, szx uint32, first bool) error {
	s := &c.slots[(c.head+c.count)%len(c.slots)]
	c.count++
	c.mid++
	c.seq++
	*s = slot{num: num, szx: szx, mid: c.mid, seq: c.seq, out: s.out, payload: s.payload, etag: s.etag}
	binary.BigEndian.PutUint32(c.token[4:], c.seq)
	c.reqOpts = append(c.reqOpts[:0], c.base...)
	c.reqOpts = append(c.reqOpts, message.Option{ID: message.Block2, Value: encodeBlock(&c.blockVal, num, false, szx)})
	if first {
		// Ask for the total size (RFC 7959 §4).
		c.reqOpts = append(c.reqOpts, message.Option{ID: message.Size2})
	}
	if c.echo != nil {
		c.reqOpts = append(c.reqOpts, message.Option{ID: optionEcho, Value: c.echo})
	}
	req := message.Message{
		Token:     c.token[:],
		Options:   c.reqOpts,
		Code:      codes.GET,
		MessageID: int32(c.mid),
		Type:      message.Confirmable,
	}
	if s.out == nil {
		s.out = make([]byte, 512)
	}
	n, err := coder.DefaultCoder.Encode(req, s.out[:cap(s.out)])
	if errors.Is(err, message.ErrTooSmall) {
		s.out = make([]byte, n)
		n, err = coder.DefaultCoder.Encode(req, s.out)
	}
	if err != nil {
		return fmt.Errorf("download: encode request: %w", err)
	}
	s.out = s.out[:n]
	c.echo = nil // sent; a retransmission reuses s.out
	// ACK_TIMEOUT to ACK_TIMEOUT * ACK_RANDOM_FACTOR (RFC 7252 §4.2).
	s.timeout = time.Duration(float64(c.tx.AckTimeout) * (1 + mrand.Float64()*(c.tx.AckRandomFactor-1)))
	s.deadline = time.Now().Add(s.timeout)
	if err := c.conn.send(s.out); err != nil {
		return transient(fmt.Errorf("download: send: %w", err))
	}
	return nil
}

// wait reads one datagram, or handles the expiry of the earliest
// retransmission deadline in the window.
func (c *blockClient) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var deadline time.Time
	for i := range c.count {
		s := &c.slots[(c.head+i)%len(c.slots)]
		if !s.done && (deadline.IsZero() || s.deadline.Before(deadline)) {
			deadline = s.deadline
		}
	}
	n, err := c.conn.recv(c.in, deadline)
	if err == nil {
		return c.accept(c.in[:n])
	}
	if !isTimeout(err) {
		return transient(fmt.Errorf("download: receive: %w", err))
	}
	now := time.Now()
	for i := range c.count {
		s := &c.slots[(c.head+i)%len(c.slots)]
		if s.done || now.Before(s.deadline) {
			continue
		}
		if s.acked {
			return transient(fmt.Errorf("download: block %d: no separate response within %v", s.num, c.sepWait))
		}
		if s.retransmits >= c.tx.MaxRetransmit {
			return transient(fmt.Errorf("download: block %d: no answer after %d retransmissions", s.num, s.retransmits))
		}
		s.retransmits++
		s.timeout *= 2
		s.deadline = now.Add(s.timeout)
		if err := c.conn.send(s.out); err != nil {
			return transient(fmt.Errorf("download: send: %w", err))
		}
	}
	return nil
}

// accept matches one datagram against the requests in the window. Garbage,
// duplicates and unrelated messages are ignored (RFC 7252 §4.5); only a
// Reset of a pending request or a malformed Block2 option is an error.
func (c *blockClient) accept(dgram []byte) error {
	c.msg.Options = c.msg.Options[:0]
	if _, err := coder.DefaultCoder.Decode(dgram, &c.msg); err != nil {
		return nil
	}
	m := &c.msg
	isResponse := m.Code>>5 >= 2 && m.Code>>5 <= 5
	var s *slot
	switch m.Type {
	case message.Acknowledgement:
		s = c.pending(func(s *slot) bool { return s.mid == uint16(m.MessageID) })
		if s == nil || s.acked {
			return nil
		}
		if m.Code == codes.Empty {
			s.acked = true
			s.deadline = time.Now().Add(c.sepWait)
			return nil
		}
		if !isResponse || !c.tokenOf(s, m.Token) {
			return nil
		}
	case message.Reset:
		if s := c.pending(func(s *slot) bool { return s.mid == uint16(m.MessageID) }); s != nil && !s.acked {
			return fmt.Errorf("%w: server reset the request for block %d", ErrProtocol, s.num)
		}
		return nil
	case message.Confirmable, message.NonConfirmable:
		ours := len(m.Token) == len(c.token) && bytes.Equal(m.Token[:4], c.token[:4])
		if m.Type == message.Confirmable && isResponse && ours {
			// A separate response to this or an earlier request of ours,
			// possibly a retransmission: acknowledge it (RFC 7252 §5.2.2).
			c.ack = [4]byte{0x60, 0, byte(m.MessageID >> 8), byte(m.MessageID)}
			if err := c.conn.send(c.ack[:]); err != nil {
				return transient(fmt.Errorf("download: send: %w", err))
			}
		}
		if !ours || !isResponse {
			return nil
		}
		seq := binary.BigEndian.Uint32(m.Token[4:])
		s = c.pending(func(s *slot) bool { return s.seq == seq })
		if s == nil {
			return nil
		}
	default:
		return nil
	}
	if err := parseResponse(m, &s.resp); err != nil {
		return err
	}
	// Copy out of the receive buffer: the slot may wait for earlier blocks.
	s.payload = append(s.payload[:0], s.resp.payload...)
	s.resp.payload = s.payload
	if s.resp.etag != nil {
		s.etag = append(s.etag[:0], s.resp.etag...)
		s.resp.etag = s.etag
	}
	s.done = true
	if c.size < 0 && s.resp.size >= 0 {
		c.size = s.resp.size
	}
	return nil
}

// pending returns the unanswered request in the window that match reports, or nil.
func (c *blockClient) pending(match func(*slot) bool) *slot {
	for i := range c.count {
		s := &c.slots[(c.head+i)%len(c.slots)]
		if !s.done && match(s) {
			return s
		}
	}
	return nil
}

// tokenOf reports whether tok is the token of s's request.
func (c *blockClient) tokenOf(s *slot, tok []byte) bool {
	return len(tok) == len(c.token) && bytes.Equal(tok[:4], c.token[:4]) && binary.BigEndian.Uint32(tok[4:]) == s.seq
}

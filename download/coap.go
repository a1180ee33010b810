package download

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

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
	defer conn.Close()
	// Closing the connection unblocks a pending Read at once on cancellation.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c, err := newBlockClient(conn, u, req)
	if err != nil {
		return err
	}
	err = c.run(ctx, t)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func dialDatagram(ctx context.Context, u *url.URL, req *Request) (net.Conn, error) {
	if u.Scheme == "coaps" {
		return dialDTLS(ctx, u, req)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", hostPort(u, "5683"))
	if err != nil {
		return nil, transient(fmt.Errorf("download: dial %s: %w", u.Host, err))
	}
	return conn, nil
}

func hostPort(u *url.URL, defPort string) string {
	port := u.Port()
	if port == "" {
		port = defPort
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// Block2 request and response handling over a datagram conn (UDP or DTLS),
// shared by coap and coaps. Buffers are allocated once per connection so
// the steady state allocates nothing per block.
type blockClient struct {
	conn    net.Conn
	tx      TxParams
	sepWait time.Duration
	szx     uint32

	base     message.Options // Uri-Path and Uri-Query, in option order
	reqOpts  message.Options // base + Block2 (+ Size2), reused per request
	blockVal [3]byte
	out      []byte
	in       []byte
	ack      [4]byte
	msg      message.Message
	resp     response

	mid   uint16
	token [8]byte // random prefix; the last 4 bytes count requests
	seq   uint32
}

// Room for a block of up to 1024 bytes plus any options a server may add.
const datagramBufSize = 64 << 10

func newBlockClient(conn net.Conn, u *url.URL, req *Request) (*blockClient, error) {
	szx, err := szxOf(req.BlockSize)
	if err != nil {
		return nil, err
	}
	c := &blockClient{
		conn:    conn,
		tx:      req.Tx,
		sepWait: req.Timeout,
		szx:     szx,
		out:     make([]byte, 2048),
		in:      make([]byte, datagramBufSize),
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
	size     int64 // Size2, or -1
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
		}
	}
	return nil
}

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

// run drives the Block2 transfer over the datagram connection.
func (c *blockClient) run(ctx context.Context, t *transfer) error {
	return runBlocks(ctx, c, c.szx, t)
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

// exchange sends one CON GET for block num and returns its response,
// retransmitting with exponential back-off (RFC 7252 §4.2) and accepting a
// piggybacked or a separate response (§5.2).
func (c *blockClient) exchange(ctx context.Context, num, szx uint32, first bool) (*response, error) {
	c.mid++
	c.seq++
	binary.BigEndian.PutUint32(c.token[4:], c.seq)
	c.reqOpts = append(c.reqOpts[:0], c.base...)
	c.reqOpts = append(c.reqOpts, message.Option{ID: message.Block2, Value: encodeBlock(&c.blockVal, num, false, szx)})
	if first {
		// Ask for the total size (RFC 7959 §4).
		c.reqOpts = append(c.reqOpts, message.Option{ID: message.Size2})
	}
	req := message.Message{
		Token:     c.token[:],
		Options:   c.reqOpts,
		Code:      codes.GET,
		MessageID: int32(c.mid),
		Type:      message.Confirmable,
	}
	n, err := coder.DefaultCoder.Encode(req, c.out)
	if err != nil {
		return nil, fmt.Errorf("download: encode request: %w", err)
	}
	out := c.out[:n]

	timeout := time.Duration(float64(c.tx.AckTimeout) * (1 + mrand.Float64()*(c.tx.AckRandomFactor-1)))
	if _, err := c.conn.Write(out); err != nil {
		return nil, transient(fmt.Errorf("download: send: %w", err))
	}
	deadline := time.Now().Add(timeout)
	retransmits := 0
	acked := false
	for {
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return nil, transient(err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		n, err := c.conn.Read(c.in)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, transient(fmt.Errorf("download: receive: %w", err))
			}
			if acked {
				return nil, transient(fmt.Errorf("download: no separate response within %v", c.sepWait))
			}
			if retransmits >= c.tx.MaxRetransmit {
				return nil, transient(fmt.Errorf("download: block %d: no answer after %d retransmissions", num, retransmits))
			}
			retransmits++
			timeout *= 2
			deadline = time.Now().Add(timeout)
			if _, err := c.conn.Write(out); err != nil {
				return nil, transient(fmt.Errorf("download: send: %w", err))
			}
			continue
		}
		match, err := c.accept(c.in[:n], acked)
		switch {
		case err != nil:
			return nil, err
		case match == matchEmptyACK:
			acked = true
			deadline = time.Now().Add(c.sepWait)
		case match == matchResponse:
			return &c.resp, nil
		}
	}
}

type matchKind int

const (
	matchNone matchKind = iota
	matchEmptyACK
	matchResponse
)

// accept classifies one datagram against the outstanding request. Garbage,
// duplicates and unrelated messages are ignored (RFC 7252 §4.5).
func (c *blockClient) accept(dgram []byte, acked bool) (matchKind, error) {
	c.msg.Options = c.msg.Options[:0]
	if _, err := coder.DefaultCoder.Decode(dgram, &c.msg); err != nil {
		return matchNone, nil
	}
	m := &c.msg
	ours := bytes.Equal(m.Token, c.token[:])
	isResponse := m.Code>>5 >= 2 && m.Code>>5 <= 5
	switch m.Type {
	case message.Acknowledgement:
		if uint16(m.MessageID) != c.mid || acked {
			return matchNone, nil
		}
		if m.Code == codes.Empty {
			return matchEmptyACK, nil
		}
		if !ours || !isResponse {
			return matchNone, nil
		}
	case message.Reset:
		if uint16(m.MessageID) == c.mid && !acked {
			return matchNone, fmt.Errorf("%w: server reset the request", ErrProtocol)
		}
		return matchNone, nil
	case message.Confirmable, message.NonConfirmable:
		if m.Type == message.Confirmable && isResponse && bytes.Equal(m.Token[:min(len(m.Token), 4)], c.token[:4]) {
			// A separate response to this or an earlier request of ours,
			// possibly a retransmission: acknowledge it (RFC 7252 §5.2.2).
			c.ack = [4]byte{0x60, 0, byte(m.MessageID >> 8), byte(m.MessageID)}
			if _, err := c.conn.Write(c.ack[:]); err != nil {
				return matchNone, transient(err)
			}
		}
		if !ours || !isResponse {
			return matchNone, nil
		}
	default:
		return matchNone, nil
	}
	if err := parseResponse(m, &c.resp); err != nil {
		return matchNone, err
	}
	return matchResponse, nil
}

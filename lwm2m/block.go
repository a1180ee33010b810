package lwm2m

import (
	"context"
	"errors"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// Block-wise writes (RFC 7959 §2.5) are received here rather than by
// go-coap, whose block-wise mode holds the whole body in memory before any
// handler sees it. A StreamWriter gets each block as it arrives; other
// objects get the assembled body, up to Config.MaxAssembledWrite.

// ErrTransferTimeout aborts a block-wise write whose next block did not
// come within the exchange lifetime.
var ErrTransferTimeout = errors.New("lwm2m: block-wise transfer timed out")

// errTransferReplaced aborts a transfer that a new one (block 0) replaced.
var errTransferReplaced = errors.New("lwm2m: block-wise transfer replaced by a new one")

// blockTransfers holds the one block-wise write in progress: a server sends
// one at a time, and a new block 0 replaces an unfinished transfer.
type blockTransfers struct {
	mu  sync.Mutex
	cur *transfer
	// fastBlocks counts the blocks block1Fast took, for tests.
	fastBlocks int
}

type transfer struct {
	path   model.Path
	format content.Format
	// off is the offset of the next byte expected. Blocks are sequenced
	// by offset (NUM × size), not number, so that the server may change
	// the block size mid-transfer (RFC 7959 §2.5).
	off     int64
	blocks  int   // blocks taken
	lastOff int64 // offset of the last block, once done
	done    bool  // the last block was taken
	lastRsp response
	stream  Stream
	buf     []byte // assembled body when not streaming
	timer   *time.Timer
}

func (t *transfer) abort(err error) {
	if t.timer != nil {
		t.timer.Stop()
	}
	if t.stream != nil && !t.done {
		t.stream.Abort(err)
	}
	t.done = true
}

// block1 is one block of a Block1 write, checked against its option.
type block1 struct {
	szx     blockwise.SZX
	num     int64
	more    bool
	payload []byte
}

func (k block1) size() int { return int(k.szx.Size()) }

// offset is the position of k's first byte in the body (RFC 7959 §2.2).
func (k block1) offset() int64 { return k.num * int64(k.size()) }

// parseBlock1 decodes a Block1 option value and checks the payload
// against it. A failure is the code to answer.
func parseBlock1(v uint32, payload []byte) (block1, codes.Code) {
	szx, num, more, err := blockwise.DecodeBlockOption(v)
	if err != nil || szx > blockwise.SZX1024 {
		// SZX 7 is BERT, for TCP only (RFC 8323 §6).
		return block1{}, codes.BadOption
	}
	k := block1{szx: szx, num: num, more: more, payload: payload}
	if more && len(payload) != k.size() {
		// RFC 7959 §2.2: every block but the last is exactly the block size.
		return block1{}, codes.BadRequest
	}
	if len(payload) > k.size() {
		return block1{}, codes.RequestEntityTooLarge
	}
	return k, 0
}

// expects reports whether k is the block t waits for next at p: one that
// starts at the next byte expected, whatever its size, and not a
// retransmission, a gap or a new transfer. RFC 7959 §2.5 lets the server
// change the block size mid-transfer, after which "the second request
// starts with a block number larger than one"; Anjay also accepts larger
// and alternating sizes. Such a block is the steady state of a transfer,
// which the fast path of block1Fast takes too.
func (t *transfer) expects(p model.Path, k block1) bool {
	return t != nil && t.path == p && !t.done && k.num > 0 && k.offset() == t.off
}

// duplicate reports whether k repeats a block of t already taken: it
// ends at or before the next byte expected (a block 0 only while it is
// the only one taken; after that a block 0 starts a new transfer).
func (t *transfer) duplicate(k block1) bool {
	if k.num == 0 {
		return t.blocks == 1 && int64(len(k.payload)) <= t.off
	}
	return k.offset()+int64(len(k.payload)) <= t.off
}

func (b *blockTransfers) receive(ctx context.Context, c *Client, o Object, p model.Path, f content.Format, r *pool.Message) response {
	v, err := r.Options().GetUint32(message.Block1)
	if err != nil {
		return errResponse(codes.BadOption)
	}
	payload, err := r.ReadBody()
	if err != nil {
		return errResponse(codes.BadRequest)
	}
	k, code := parseBlock1(v, payload)
	if code != 0 {
		return errResponse(code)
	}
	num := k.num

	if num == 0 && !k.more {
		// The whole body in one block: an ordinary write.
		rsp := c.applyWrite(ctx, o, p, f, payload)
		rsp.opts = append(rsp.opts, coapopt.Block(message.Block1, k.szx, 0, false))
		return rsp
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.cur
	same := t != nil && t.path == p
	switch {
	case t.expects(p, k):
	case same && !t.done && t.duplicate(k):
		// A retransmission of a block already taken (with a new message
		// ID; go-coap answers same-ID duplicates itself): acknowledge it
		// again without writing it twice.
		return continueResponse(k.szx, num)
	case same && t.done && num > 0 && k.offset() == t.lastOff:
		return t.lastRsp
	case num == 0:
		if t != nil {
			t.abort(errTransferReplaced)
		}
		nt, rsp := b.open(ctx, c, o, p, f, r)
		if nt == nil {
			b.cur = nil
			return rsp
		}
		b.cur = nt
		t = nt
	default:
		// A gap, an overlap, or a block of a transfer we do not hold:
		// the body is incomplete (RFC 7959 §2.9.2).
		err := fmt.Errorf("%w: block %d of %d bytes at offset %d, no transfer in progress (block 0 expected)", ErrIncomplete, num, k.size(), k.offset())
		if same {
			err = fmt.Errorf("%w: block %d of %d bytes at offset %d, offset %d expected", ErrIncomplete, num, k.size(), k.offset(), t.off)
			t.abort(err)
			b.cur = nil
		}
		return refusal(codes.RequestEntityIncomplete, err)
	}

	if err := b.advance(c, t, k); err != nil {
		return errorResponse(err)
	}
	if k.more {
		return continueResponse(k.szx, num)
	}
	var rsp response
	if t.stream != nil {
		t.done = true // Close owns the outcome now; Abort must not follow
		if err := t.stream.Close(); err != nil {
			rsp = errorResponse(err)
		} else {
			rsp = errResponse(codes.Changed)
		}
	} else {
		rsp = c.applyWrite(ctx, o, p, f, t.buf)
		t.buf = nil
		t.done = true
	}
	rsp.opts = append(rsp.opts, coapopt.Block(message.Block1, k.szx, num, false))
	t.lastRsp = rsp
	return rsp
}

// advance takes k, the block t expects next, with b.mu held: the core
// that receive and the fast path share. After an error the transfer is
// aborted and gone.
func (b *blockTransfers) advance(c *Client, t *transfer, k block1) error {
	if err := t.take(k.payload, c.cfg.MaxAssembledWrite); err != nil {
		t.abort(err)
		b.cur = nil
		return err
	}
	t.off = k.offset() + int64(len(k.payload))
	t.blocks++
	if !k.more {
		t.lastOff = k.offset()
	}
	if k.more {
		t.timer.Reset(c.cfg.BlockTimeout)
	} else {
		t.timer.Stop()
	}
	return nil
}

func continueResponse(szx blockwise.SZX, num int64) response {
	return response{code: codes.Continue, opts: message.Options{coapopt.Block(message.Block1, szx, num, true)}}
}

// open starts a transfer at block 0.
func (b *blockTransfers) open(ctx context.Context, c *Client, o Object, p model.Path, f content.Format, r *pool.Message) (*transfer, response) {
	t := &transfer{path: p, format: f}
	if sw, ok := o.(StreamWriter); ok && p.Len() == 3 {
		// A server may send the value raw, in base64 text (Wakaama's
		// default) or as a TLV: decode on the fly, block by block.
		typ, _ := c.typesOf(p)
		dec, err := content.NewValueStream(f, p, typ)
		if err != nil {
			return nil, refusal(codes.UnsupportedMediaType, err)
		}
		size := int64(-1)
		if s1, err := r.Options().GetUint32(message.Size1); err == nil && dec == nil {
			size = int64(s1) // Size1 counts the encoded body: a size only when raw
		}
		s, err := sw.OpenStream(ctx, p, size)
		if err != nil {
			return nil, errorResponse(err)
		}
		t.stream = s
		if dec != nil {
			t.stream = &decodingStream{Stream: s, dec: dec}
		}
	}
	t.timer = time.AfterFunc(c.cfg.BlockTimeout, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.cur == t && !t.done {
			c.log.Warn("block-wise write abandoned by the server", "path", p, "next_offset", t.off)
			t.abort(ErrTransferTimeout)
			b.cur = nil
		}
	})
	return t, response{}
}

func (t *transfer) take(payload []byte, limit int) error {
	if t.stream != nil {
		return t.stream.Write(payload)
	}
	if len(t.buf)+len(payload) > limit {
		return &TooLargeError{Max: int64(limit)}
	}
	t.buf = append(t.buf, payload...)
	return nil
}

// decodingStream passes the value that dec decodes from the blocks of a
// write to the object's Stream. A malformed body aborts the Stream and
// gets 4.00.
type decodingStream struct {
	Stream
	dec content.ValueStream
}

func (d *decodingStream) Write(chunk []byte) error {
	v, err := d.dec.Next(chunk)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if len(v) == 0 {
		return nil
	}
	return d.Stream.Write(v)
}

// Close checks that the value is complete before the Stream takes it as
// such; a value cut short is aborted, not closed.
func (d *decodingStream) Close() error {
	if err := d.dec.Close(); err != nil {
		err = fmt.Errorf("%w: %w", ErrBadRequest, err)
		d.Stream.Abort(err)
		return err
	}
	return d.Stream.Close()
}

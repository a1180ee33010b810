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
	path    model.Path
	format  content.Format
	next    int64 // number of the next block expected
	size    int   // block size in use
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

// expects reports whether k is the block t waits for next at p: not a
// retransmission, a gap, a new transfer or a changed block size. Such a
// block is the steady state of a transfer, which the fast path of
// block1Fast takes too.
func (t *transfer) expects(p model.Path, k block1) bool {
	return t != nil && t.path == p && !t.done && k.num > 0 && k.num == t.next && k.size() == t.size
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
	case same && !t.done && num < t.next && (num > 0 || t.next == 1):
		// A retransmission of a block already taken (with a new message
		// ID; go-coap answers same-ID duplicates itself): acknowledge it
		// again without writing it twice.
		return continueResponse(k.szx, num)
	case same && t.done && num > 0 && num == t.next-1:
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
		nt.size = k.size()
		b.cur = nt
		t = nt
	default:
		// A gap, a block of a transfer we do not hold, or a block size
		// changed mid-transfer: the image is incomplete (RFC 7959 §2.9.2).
		if same {
			t.abort(fmt.Errorf("%w: expected block %d, got %d", ErrIncomplete, t.next, num))
			b.cur = nil
		}
		c.log.Debug("lwm2m: block out of sequence", "path", p, "num", num)
		return errResponse(codes.RequestEntityIncomplete)
	}

	if err := b.advance(c, t, k); err != nil {
		return errResponse(codeOf(err))
	}
	if k.more {
		return continueResponse(k.szx, num)
	}
	var rsp response
	if t.stream != nil {
		t.done = true // Close owns the outcome now; Abort must not follow
		rsp = errResponse(codeOf(t.stream.Close()))
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
	t.next = k.num + 1
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
		if f != content.Opaque {
			// Streaming carries raw bytes; text/plain's base64 is for small writes.
			return nil, errResponse(codes.UnsupportedMediaType)
		}
		size := int64(-1)
		if s1, err := r.Options().GetUint32(message.Size1); err == nil {
			size = int64(s1)
		}
		s, err := sw.OpenStream(ctx, p, size)
		if err != nil {
			rsp := errResponse(codeOf(err))
			var tl *TooLargeError
			if errors.As(err, &tl) {
				// RFC 7959 §4: tell the peer how much we take.
				rsp.opts = append(rsp.opts, coapopt.Uint(message.Size1, uint32(min(tl.Max, 1<<32-1))))
			}
			return nil, rsp
		}
		t.stream = s
	}
	t.timer = time.AfterFunc(c.cfg.BlockTimeout, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.cur == t && !t.done {
			c.log.Warn("lwm2m: block-wise write abandoned by the server", "path", p, "next_block", t.next)
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

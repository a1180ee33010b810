package lwm2m

import (
	"strconv"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// block1Fast answers the steady state of a block-wise write (RFC 7959
// §2.5), the middle blocks of a firmware push, in the read goroutine of a
// udpSession: no go-coap queue, goroutine hand-off or pooled message per
// block, and no allocation. It takes a confirmable PUT only when it is
// the block that the transfer in progress expects next and not its last,
// to the transfer's path, in its content format, with no option besides
// Uri-Path, Content-Format, Block1 and Size1. Everything else, first and
// last blocks, retransmissions and gaps included, goes to go-coap and the
// handler unchanged. A block passes the rules of every Write (writable)
// and the transfer's core (advance) as on the slow path.
//
// One per connection: the read goroutine alone uses its buffers.
type block1Fast struct {
	c   *Client
	b   *blockTransfers // the session's
	msg message.Message // the request, decoded into reused options
	opt [1]message.Option
	val [4]byte  // the Block1 value of the answer
	seg [8]byte  // a path level in decimal
	out [64]byte // the answer: header, token, Block1
}

func newBlock1Fast(s *session) *block1Fast {
	return &block1Fast{c: s.c, b: &s.blocks, msg: message.Message{Options: make(message.Options, 0, 8)}}
}

// serve answers dgram if it is a block the fast path takes; then ok is
// true and err is what writing the answer returned. With ok false, dgram
// is untouched and nothing has changed.
func (f *block1Fast) serve(dgram []byte, write func([]byte) error) (ok bool, err error) {
	// Version 1, Confirmable, PUT (RFC 7252 §3): decode nothing else.
	if len(dgram) < 4 || dgram[0]>>4 != 1<<2|byte(message.Confirmable) || codes.Code(dgram[1]) != codes.PUT {
		return false, nil
	}
	m := &f.msg
	m.Options = m.Options[:0]
	if _, err := coder.DefaultCoder.Decode(dgram, m); err != nil {
		return false, nil
	}
	var block, cf []byte
	var nBlock, nCF, nPath int
	for _, o := range m.Options {
		if !message.VerifyOptLen(o.ID, len(o.Value)) {
			return false, nil // go-coap answers 4.02 or ignores it
		}
		switch o.ID {
		case message.URIPath:
			nPath++
		case message.ContentFormat:
			cf = o.Value
			nCF++
		case message.Block1:
			block = o.Value
			nBlock++
		case message.Size1:
		default:
			return false, nil
		}
	}
	if nBlock != 1 || nCF != 1 || nPath == 0 {
		return false, nil
	}
	v, _, _ := message.DecodeUint32(block)
	k, code := parseBlock1(v, m.Payload)
	if code != 0 || !k.more {
		return false, nil
	}
	format, _, _ := message.DecodeUint32(cf)

	c := f.c
	b := f.b
	b.mu.Lock()
	t := b.cur
	var p model.Path
	if t != nil {
		p = t.path
	}
	b.mu.Unlock()
	if t == nil || !f.pathIs(m.Options, p) {
		return false, nil
	}
	if _, code := c.writable(p); code != 0 {
		return false, nil
	}
	b.mu.Lock()
	if b.cur != t || !t.expects(p, k) || t.format != content.Format(format) {
		b.mu.Unlock()
		return false, nil
	}
	err = b.advance(c, t, k)
	b.fastBlocks++
	b.mu.Unlock()

	ack := message.Message{Type: message.Acknowledgement, Code: codes.Continue, MessageID: m.MessageID, Token: m.Token}
	if err != nil {
		rsp := errorResponse(err) // 4.13 carries Size1
		ack.Code = rsp.code
		if len(rsp.opts) > 0 {
			ack.Options = rsp.opts
		}
		c.logRefused(codes.PUT, p.String(), ack.Code, err)
	} else {
		// RFC 7959 §2.3: 2.31 echoes the block, M set.
		bv, _ := blockwise.EncodeBlockOption(k.szx, k.num, true)
		f.opt[0] = message.Option{ID: message.Block1, Value: coapopt.PutUint(f.val[:], bv)}
		ack.Options = f.opt[:]
	}
	n, err := coder.DefaultCoder.Encode(ack, f.out[:])
	if err != nil {
		return true, err // cannot happen: the answer is at most 24 bytes
	}
	return true, write(f.out[:n])
}

// busy reports whether a block-wise write is in progress, whose next
// blocks the read loop should expect soon.
func (f *block1Fast) busy() bool {
	b := f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur != nil && !b.cur.done
}

// pathIs reports whether the Uri-Path options of opts are p's levels in
// the canonical decimal form that model.ParsePath reads back as p.
func (f *block1Fast) pathIs(opts message.Options, p model.Path) bool {
	i := 0
	for _, o := range opts {
		if o.ID != message.URIPath {
			continue
		}
		if i >= p.Len() || string(o.Value) != string(strconv.AppendUint(f.seg[:0], uint64(p.ID(i)), 10)) {
			return false
		}
		i++
	}
	return i == p.Len()
}

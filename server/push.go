package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrTooLarge reports a package the device refused for its size (4.13).
var ErrTooLarge = errors.New("server: package too large for the device")

var pathPackage = model.NewPath(fwobj.ObjectID, 0, fwobj.ResPackage)

// pushChunk is how much of the package one read from the file takes: one
// pread per 64 blocks rather than one per block.
const pushChunk = 64 << 10

// block1 is one Block1 PUT of a package to /5/0/0.
type block1 struct {
	szx     blockwise.SZX
	num     int64
	more    bool
	total   int64 // the package size, sent as Size1 with block 0 (RFC 7959 §4)
	payload []byte
}

// block1Answer is what the push needs from a device's answer to a block.
type block1Answer struct {
	code     codes.Code
	szx      blockwise.SZX // the answer's Block1 size, or the request's
	size1    uint32
	hasSize1 bool
}

func parseBlock1Answer(code codes.Code, opts message.Options, szx blockwise.SZX) block1Answer {
	a := block1Answer{code: code, szx: szx}
	if v, err := opts.GetUint32(message.Block1); err == nil {
		if z, _, _, err := blockwise.DecodeBlockOption(v); err == nil {
			a.szx = z
		}
	}
	if v, err := opts.GetUint32(message.Size1); err == nil {
		a.size1, a.hasSize1 = v, true
	}
	return a
}

// block1Sender carries the blocks of one push to the device.
type block1Sender interface {
	put(ctx context.Context, b *block1) (block1Answer, error)
	close()
}

// Push writes file to /5/0/0 on ep with Block1 PUTs (RFC 7959, 2.5) and
// calls progress after every acknowledged block. It starts with 1024-byte
// blocks and follows a smaller size the device asks for in its 2.31
// answers.
//
// A device registered over plain UDP gets the blocks from a socket of
// their own (see pushsock.go); a DTLS device, or any device where that
// socket cannot be had, through go-coap.
func (s *Server) Push(ctx context.Context, ep, file string, progress func(sent, total int64)) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("server: push: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("server: push: %w", err)
	}
	total := st.Size()
	// A sleeping queue-mode device gets the whole push when it wakes.
	ctx, release, err := s.holding(ctx, ep, "push")
	if err != nil {
		return err
	}
	defer release()
	snd := s.pushSender(ctx, ep)
	defer snd.close()
	chunk := chunkReader{r: f, buf: make([]byte, pushChunk)}
	szx := blockwise.SZX1024
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		size := int64(szx.Size())
		if off%size != 0 {
			return fmt.Errorf("server: push to %s: block size %d does not divide offset %d", ep, size, off)
		}
		payload, err := chunk.at(off, int(size))
		if err != nil {
			return fmt.Errorf("server: push: %w", err)
		}
		n := int64(len(payload))
		b := block1{szx: szx, num: off / size, more: off+n < total, total: total, payload: payload}
		if _, err := blockwise.EncodeBlockOption(b.szx, b.num, b.more); err != nil {
			return fmt.Errorf("server: push to %s: %w", ep, err)
		}
		a, err := snd.put(ctx, &b)
		if err != nil {
			return err
		}
		switch {
		case a.code == codes.RequestEntityTooLarge:
			// RFC 7959, 2.9.3: the device may name a smaller block
			// size; otherwise Size1 says how much it can take.
			if b.num == 0 && a.szx < szx {
				szx = a.szx
				continue
			}
			if a.hasSize1 {
				return fmt.Errorf("%w: %s accepts at most %d bytes, package has %d", ErrTooLarge, ep, a.size1, total)
			}
			return fmt.Errorf("%w: %s answered 4.13", ErrTooLarge, ep)
		case b.more && (a.code == codes.Continue || a.code == codes.Changed):
		case !b.more && a.code == codes.Changed:
		default:
			return &CodeError{Op: "push", Endpoint: ep, Path: pathPackage.String(), Code: a.code}
		}
		off += n
		s.seen(ep) // the answer keeps a queue-mode device awake
		if progress != nil {
			progress(off, total)
		}
		if !b.more {
			return nil
		}
		if a.szx < szx {
			szx = a.szx
		}
	}
}

// chunkReader serves blocks from a window of the file. Offsets only grow,
// except for a restart at 0 with a smaller size, which stays in the window.
type chunkReader struct {
	r   io.ReaderAt
	buf []byte
	off int64 // file offset of buf[0]
	n   int   // valid bytes in buf
	eof bool  // the window reaches the end of the file
}

// at returns up to size bytes at off; fewer only at the end of the file.
func (c *chunkReader) at(off int64, size int) ([]byte, error) {
	end := c.off + int64(c.n)
	if off < c.off || off > end || off+int64(size) > end && !c.eof {
		n, err := c.r.ReadAt(c.buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		c.off, c.n, c.eof = off, n, err != nil
	}
	i := int(off - c.off)
	return c.buf[i:min(i+size, c.n)], nil
}

// coapSender sends blocks through the device's go-coap connection.
type coapSender struct {
	s  *Server
	ep string
}

func (c coapSender) put(ctx context.Context, b *block1) (block1Answer, error) {
	opts := []message.Option{coapopt.Block(message.Block1, b.szx, b.num, b.more)}
	if b.num == 0 {
		opts = append(opts, coapopt.Uint(message.Size1, uint32(min(b.total, 1<<32-1))))
	}
	req := request{op: "push", ep: c.ep, path: pathPackage, code: codes.PUT, format: content.Opaque,
		payload: b.payload, accept: AnyFormat, opts: opts}
	_, resp, err := c.s.do(ctx, req)
	if err != nil {
		return block1Answer{}, err
	}
	a := parseBlock1Answer(resp.Code(), resp.Options(), b.szx)
	c.s.release(c.ep, resp)
	return a, nil
}

func (coapSender) close() {}

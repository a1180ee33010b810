package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"io"
	"os"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrTooLarge reports a package the device refused for its size (4.13).
var ErrTooLarge = errors.New("server: package too large for the device")

var pathPackage = model.NewPath(5, 0, 0)

// Push writes file to /5/0/0 on ep with Block1 PUTs (RFC 7959, 2.5),
// reading one block at a time, and calls progress after every
// acknowledged block. It starts with 1024-byte blocks and follows a smaller
// size the device asks for in its 2.31 answers.
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
	szx := blockwise.SZX1024
	buf := make([]byte, 1024)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		size := int64(szx.Size())
		if off%size != 0 {
			return fmt.Errorf("server: push to %s: block size %d does not divide offset %d", ep, size, off)
		}
		num := off / size
		n, err := f.ReadAt(buf[:size], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("server: push: %w", err)
		}
		more := off+int64(n) < total
		bv, err := blockwise.EncodeBlockOption(szx, num, more)
		if err != nil {
			return fmt.Errorf("server: push to %s: %w", ep, err)
		}
		opts := []message.Option{coapopt.Uint(message.Block1, bv)}
		if num == 0 {
			opts = append(opts, coapopt.Uint(message.Size1, uint32(min(total, 1<<32-1))))
		}
		req := request{op: "push", ep: ep, path: pathPackage, code: codes.PUT, format: content.Opaque,
			payload: buf[:n], accept: AnyFormat, opts: opts}
		_, resp, err := s.do(ctx, req)
		if err != nil {
			return err
		}
		code := resp.Code()
		rszx := szx
		if v, err := resp.Options().GetUint32(message.Block1); err == nil {
			if z, _, _, err := blockwise.DecodeBlockOption(v); err == nil {
				rszx = z
			}
		}
		size1, size1Err := resp.Options().GetUint32(message.Size1)
		s.release(ep, resp)
		switch {
		case code == codes.RequestEntityTooLarge:
			// RFC 7959, 2.9.3: the device may name a smaller block
			// size; otherwise Size1 says how much it can take.
			if num == 0 && rszx < szx {
				szx = rszx
				continue
			}
			if size1Err == nil {
				return fmt.Errorf("%w: %s accepts at most %d bytes, package has %d", ErrTooLarge, ep, size1, total)
			}
			return fmt.Errorf("%w: %s answered 4.13", ErrTooLarge, ep)
		case more && (code == codes.Continue || code == codes.Changed):
		case !more && code == codes.Changed:
		default:
			return &CodeError{Op: "push", Endpoint: ep, Path: pathPackage.String(), Code: code}
		}
		off += int64(n)
		if progress != nil {
			progress(off, total)
		}
		if !more {
			return nil
		}
		if rszx < szx {
			szx = rszx
		}
	}
}

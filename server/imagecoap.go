package server

import (
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Published images are served over CoAP from a socket of their own, by
// this loop rather than by go-coap's server. A Block2 GET is idempotent,
// so the answer needs no state: go-coap's server would keep every 1 KiB
// answer for EXCHANGE_LIFETIME to absorb duplicates, which holds a whole
// image in memory per device that pulls it, and it hands each request
// between goroutines. Here one goroutine reads a request, reads the block
// from the file and answers, reusing its buffers.

// serveImages answers GET /fw/{id} with Block2 on l until l is closed.
func (s *Server) serveImages(l *net.UDPConn) {
	in := make([]byte, 1500)
	out := make([]byte, 0, 1500)
	payload := make([]byte, 1024)
	// Options.Unmarshal fills the slice up to its capacity.
	req := message.Message{Options: make(message.Options, 0, 32)}
	resp := message.Message{Options: make(message.Options, 0, 8)}
	optBuf := make([]byte, 12)
	for {
		n, from, err := l.ReadFromUDPAddrPort(in)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if _, err := coder.DefaultCoder.Decode(in[:n], &req); err != nil {
			continue // not CoAP: drop (RFC 7252 §4.2 lets us ignore it)
		}
		if req.Type != message.Confirmable && req.Type != message.NonConfirmable || req.Code == codes.Empty {
			continue // ACK, RST, ping: nothing to answer
		}
		code, body := s.imageBlock(&req, &resp, payload, optBuf)
		resp.Code, resp.Token, resp.Payload = code, req.Token, body
		resp.MessageID = req.MessageID
		resp.Type = message.Acknowledgement // piggybacked (RFC 7252 §5.2.1)
		if req.Type == message.NonConfirmable {
			resp.Type = message.NonConfirmable
		}
		b, err := coder.DefaultCoder.Encode(resp, out[:cap(out)])
		if errors.Is(err, message.ErrTooSmall) {
			out = make([]byte, 0, 2*cap(out))
			b, err = coder.DefaultCoder.Encode(resp, out[:cap(out)])
		}
		if err != nil {
			continue
		}
		_, _ = l.WriteToUDPAddrPort(out[:b], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
	}
}

// imageBlock fills resp's options and returns the code and payload for req.
func (s *Server) imageBlock(req, resp *message.Message, payload, optBuf []byte) (codes.Code, []byte) {
	resp.Options = resp.Options[:0]
	if req.Code != codes.GET {
		return codes.MethodNotAllowed, nil
	}
	p, err := req.Options.Path()
	if err != nil {
		return codes.BadOption, nil
	}
	id, ok := strings.CutPrefix(strings.TrimPrefix(p, "/"), "fw/")
	if !ok {
		return codes.NotFound, nil
	}
	im, ok := s.lookupImage(id)
	if !ok {
		return codes.NotFound, nil
	}
	szx, num := blockwise.SZX1024, int64(0)
	if v, err := req.Options.GetUint32(message.Block2); err == nil {
		z, n, _, err := blockwise.DecodeBlockOption(v)
		if err != nil {
			return codes.BadOption, nil
		}
		// BERT is for TCP only (RFC 8323 §6); UDP gets 1024 at most.
		num = n
		if z < blockwise.SZX1024 {
			szx = z
		}
	}
	size := int64(szx.Size())
	off := num * size
	if off > im.Size || (off == im.Size && im.Size > 0) {
		return codes.BadOption, nil // RFC 7959 §2.2: a block beyond the end
	}
	n, err := im.f.ReadAt(payload[:min(size, im.Size-off)], off)
	if n < int(min(size, im.Size-off)) {
		s.logger().Error("reading image", "id", id, "off", off, "err", err)
		return codes.InternalServerError, nil
	}
	bv, _ := blockwise.EncodeBlockOption(szx, num, off+int64(n) < im.Size)
	// In option number order (RFC 7252 §3.1): ETag 4, Content-Format 12,
	// Block2 23, Size2 28.
	resp.Options = append(resp.Options,
		message.Option{ID: message.ETag, Value: im.ETag},
		message.Option{ID: message.ContentFormat, Value: coapopt.PutUint(optBuf[0:4], uint32(message.AppOctets))},
		message.Option{ID: message.Block2, Value: coapopt.PutUint(optBuf[4:8], bv)},
		message.Option{ID: message.Size2, Value: coapopt.PutUint(optBuf[8:12], uint32(min(im.Size, 1<<32-1)))},
	)
	return codes.Content, payload[:n]
}

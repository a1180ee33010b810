package images

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

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

// Serve answers GET /fw/{id} with Block2 on l until l is closed.
func (s *Store) Serve(l *net.UDPConn) {
	in := make([]byte, 1500)
	out := make([]byte, 0, 1500)
	payload := make([]byte, 1024)
	// Options.Unmarshal fills the slice up to its capacity.
	req := message.Message{Options: make(message.Options, 0, 32)}
	resp := message.Message{Options: make(message.Options, 0, 8)}
	optBuf := make([]byte, imageOptBuf)
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
		if req.Type != message.Confirmable || req.Code == codes.Empty {
			// ACK, RST, ping; and NON, which a pulling device does not
			// send and which would make the port a reflector without
			// even a retransmission's cost to the sender.
			continue
		}
		code, body := s.imageBlock(&req, &resp, payload, optBuf, from.Addr(), false)
		resp.Code, resp.Token, resp.Payload = code, req.Token, body
		resp.MessageID = req.MessageID
		resp.Type = message.Acknowledgement // piggybacked (RFC 7252 §5.2.1)
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

// imageOptBuf is the size of the option buffer imageBlock needs.
const imageOptBuf = 12 + echoLen

// imageBlock fills resp's options and returns the code and payload for
// req, which came from the address from; secure means over DTLS, whose
// handshake verified the address.
func (s *Store) imageBlock(req, resp *message.Message, payload, optBuf []byte, from netip.Addr, secure bool) (codes.Code, []byte) {
	resp.Options = resp.Options[:0]
	if req.Code != codes.GET {
		return codes.MethodNotAllowed, nil
	}
	if code := checkImageOptions(req.Options); code != 0 {
		return code, nil
	}
	p, err := req.Options.Path()
	if err != nil {
		return codes.BadOption, nil
	}
	id, ok := strings.CutPrefix(strings.TrimPrefix(p, "/"), "fw/")
	if !ok {
		return codes.NotFound, nil
	}
	im, ok := s.lookup(id)
	if !ok {
		return codes.NotFound, nil
	}
	echo, _ := req.Options.GetBytes(OptionEcho)
	if !secure && !s.mayReceiveBlocks(from, echo) {
		// RFC 9175 §2.4: a small 4.01 with an Echo that the client
		// returns to show it receives what is sent to its address.
		resp.Options = append(resp.Options, message.Option{ID: OptionEcho, Value: s.echo.issue(from, time.Now(), optBuf[12:])})
		return codes.Unauthorized, nil
	}
	szx, num := blockwise.SZX1024, int64(0)
	if v, err := req.Options.GetUint32(message.Block2); err == nil {
		z, n, _, err := blockwise.DecodeBlockOption(v)
		if err != nil || z > blockwise.SZX1024 {
			// RFC 7959 §2.2: SZX 7 is reserved, a 4.00 Bad Request
			// (BERT is for TCP only, RFC 8323 §6).
			return codes.BadRequest, nil
		}
		num, szx = n, z
	}
	size := int64(szx.Size())
	off := num * size
	if off > im.Size || (off == im.Size && im.Size > 0) {
		return codes.BadOption, nil // RFC 7959 §2.2: a block beyond the end
	}
	n, err := im.f.ReadAt(payload[:min(size, im.Size-off)], off)
	if n < int(min(size, im.Size-off)) {
		s.log().Error("reading image", "id", id, "off", off, "err", err)
		return codes.InternalServerError, nil
	}
	im.served(from, off+int64(n))
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

// checkImageOptions validates a GET's options as the device's own
// handler does: 4.02 Bad Option for a critical option the image port
// does not implement (RFC 7252 §5.4.1), for a critical option given
// twice that may appear once (§5.4.5), or for a Block2 that is not a
// 0-3 byte uint (§5.4.3); 4.06 for an Accept other than octet-stream.
func checkImageOptions(opts message.Options) codes.Code {
	for i, o := range opts {
		if o.ID&1 == 0 {
			continue // elective: ignored when unknown
		}
		switch o.ID {
		case message.URIHost, message.URIPort, message.URIPath, message.URIQuery:
		case message.Block2:
			if len(o.Value) > 3 {
				return codes.BadOption
			}
		case message.Accept:
			v, err := opts.GetUint32(message.Accept)
			if err != nil || len(o.Value) > 2 {
				return codes.BadOption
			}
			if message.MediaType(v) != message.AppOctets {
				return codes.NotAcceptable
			}
		default:
			return codes.BadOption
		}
		if i > 0 && opts[i-1].ID == o.ID && o.ID != message.URIPath && o.ID != message.URIQuery {
			return codes.BadOption
		}
	}
	return 0
}

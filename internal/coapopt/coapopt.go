// Package coapopt builds CoAP options whose value is an unsigned integer
// (Block1, Block2, Size1, Size2, Observe, Accept), in the minimal encoding
// of RFC 7252 §3.2, for code that assembles messages by hand.
package coapopt

import (
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// Uint returns option id carrying v.
func Uint(id message.OptionID, v uint32) message.Option {
	var buf [4]byte
	return message.Option{ID: id, Value: append([]byte(nil), PutUint(buf[:], v)...)}
}

// PutUint encodes v minimally into buf, which has room for four bytes, and
// returns the part used: an option value without an allocation, for a
// per-block path that reuses its buffers.
func PutUint(buf []byte, v uint32) []byte {
	n, _ := message.EncodeUint32(buf, v) // 4 bytes always suffice
	return buf[:n]
}

// Block returns a Block1 or Block2 option (RFC 7959 §2.2).
func Block(id message.OptionID, szx blockwise.SZX, num int64, more bool) message.Option {
	v, _ := blockwise.EncodeBlockOption(szx, num, more) // num is checked by callers
	return Uint(id, v)
}

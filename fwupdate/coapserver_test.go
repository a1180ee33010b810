package fwupdate_test

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// blockServer serves img over CoAP Block2 with etag, a little slowly, and
// records the number of every block asked for, so that a test can see a
// download continue where it stopped.
func blockServer(t *testing.T, img, etag []byte) (uri string, nums func() []int64) {
	t.Helper()
	return gatedBlockServer(t, img, etag, nil)
}

// gatedBlockServer is blockServer, except that it ignores the requests
// for which drop (if not nil) returns true.
func gatedBlockServer(t *testing.T, img, etag []byte, drop func(num int64) bool) (uri string, nums func() []int64) {
	t.Helper()
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var seen []int64
	go func() {
		in, out := make([]byte, 1500), make([]byte, 1500)
		for {
			n, from, err := l.ReadFromUDPAddrPort(in)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			req := message.Message{Options: make(message.Options, 0, 16)}
			if _, err := coder.DefaultCoder.Decode(in[:n], &req); err != nil || req.Code != codes.GET {
				continue
			}
			num := int64(0)
			if v, err := req.Options.GetUint32(message.Block2); err == nil {
				_, num, _, _ = blockwise.DecodeBlockOption(v)
			}
			if drop != nil && drop(num) {
				continue
			}
			mu.Lock()
			seen = append(seen, num)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			lo, hi := min(num*1024, int64(len(img))), min((num+1)*1024, int64(len(img)))
			bv, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, num, hi < int64(len(img)))
			resp := message.Message{Code: codes.Content, Token: req.Token, MessageID: req.MessageID, Type: message.Acknowledgement, Payload: img[lo:hi],
				Options: message.Options{{ID: message.ETag, Value: etag}, {ID: message.Block2, Value: be(bv)}, {ID: message.Size2, Value: be(uint32(len(img)))}}}
			if b, err := coder.DefaultCoder.Encode(resp, out); err == nil {
				l.WriteToUDPAddrPort(out[:b], from)
			}
		}
	}()
	return "coap://" + l.LocalAddr().String() + "/fw", func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]int64(nil), seen...)
	}
}

func be(v uint32) []byte {
	b := make([]byte, 4)
	n, _ := message.EncodeUint32(b, v)
	return b[:n]
}

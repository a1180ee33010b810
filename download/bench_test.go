package download

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

type discardSink struct{ n int64 }

func (s *discardSink) Open(context.Context, []byte, int64, int64) error { return nil }
func (s *discardSink) Write(p []byte) (int, error)                      { s.n += int64(len(p)); return len(p), nil }

// benchServer answers every Block2 request with 1024 bytes, without
// allocating, so allocs/op measures the client alone.
func benchServer(b *testing.B, blocks uint32) *net.UDPConn {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		in := make([]byte, 2048)
		out := make([]byte, 2048)
		payload := make([]byte, 1024)
		var m message.Message
		m.Options = make(message.Options, 0, 16)
		opts := make(message.Options, 0, 4)
		var bv [3]byte
		var sv [4]byte
		etag := []byte("bench")
		for {
			n, addr, err := conn.ReadFromUDPAddrPort(in)
			if err != nil {
				return
			}
			m.Options = m.Options[:0]
			if _, err := coder.DefaultCoder.Decode(in[:n], &m); err != nil {
				continue
			}
			v, _ := m.Options.GetBytes(message.Block2)
			num, _, _, _ := decodeBlock(v)
			opts = append(opts[:0],
				message.Option{ID: message.ETag, Value: etag},
				message.Option{ID: message.Block2, Value: encodeBlock(&bv, num, num+1 < blocks, 6)},
				message.Option{ID: message.Size2, Value: sizeValue(&sv, int(blocks)*1024)})
			resp := message.Message{Token: m.Token, MessageID: m.MessageID, Type: message.Acknowledgement, Code: codes.Content, Options: opts, Payload: payload}
			k, err := coder.DefaultCoder.Encode(resp, out)
			if err != nil {
				continue
			}
			conn.WriteToUDPAddrPort(out[:k], addr)
		}
	}()
	b.Cleanup(func() { conn.Close() })
	return conn
}

// BenchmarkCoAPBlock measures one 1024-byte Block2 round trip over
// loopback UDP against an in-process server; allocs/op is the per-block
// steady-state allocation (the download's setup, a few allocations, is
// spread over b.N blocks). window=8 keeps 8 requests in flight.
func BenchmarkCoAPBlock(b *testing.B) {
	for _, window := range []int{1, 8} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			b.ReportAllocs()
			blocks := uint32(max(b.N, 1))
			srv := benchServer(b, blocks)
			addr := srv.LocalAddr().(*net.UDPAddr).AddrPort()
			uri := "coap://" + netip.AddrPortFrom(addr.Addr(), addr.Port()).String() + "/fw"
			var sink discardSink
			b.SetBytes(1024)
			b.ResetTimer()
			if _, err := Get(context.Background(), Request{URI: uri, Window: window}, &sink); err != nil {
				b.Fatal(err)
			}
			if sink.n != int64(blocks)*1024 {
				b.Fatalf("got %d bytes", sink.n)
			}
		})
	}
}

// loopConn answers each request at once with a canned 1024-byte block,
// without a socket, so BenchmarkCoAPBlockCPU measures the client's own
// user-space cost per block: encoding, matching, parsing, copying.
type loopConn struct {
	blocks uint32
	next   uint32
	resp   []byte
}

func newLoopConn(blocks uint32) *loopConn {
	c := &loopConn{blocks: blocks}
	c.resp = append(c.resp, 0x68, 0x45, 0, 0) // ACK 2.05, token length 8
	c.resp = append(c.resp, make([]byte, 8)...)
	c.resp = append(c.resp, 0x45, 'b', 'e', 'n', 'c', 'h') // ETag (4)
	c.resp = append(c.resp, 0xd3, 0x06, 0, 0, 0)           // Block2 (23), 3 bytes
	size := blocks * 1024
	c.resp = append(c.resp, 0x54, byte(size>>24), byte(size>>16), byte(size>>8), byte(size)) // Size2 (28)
	c.resp = append(c.resp, 0xff)
	c.resp = append(c.resp, make([]byte, 1024)...)
	return c
}

func (c *loopConn) send(b []byte) error {
	copy(c.resp[2:12], b[2:12]) // message ID and token
	v := c.next<<4 | 6
	if c.next+1 < c.blocks {
		v |= 8
	}
	c.resp[20], c.resp[21], c.resp[22] = byte(v>>16), byte(v>>8), byte(v)
	c.next++
	return nil
}

func (c *loopConn) recv(b []byte, _ time.Time) (int, error) { return copy(b, c.resp), nil }
func (c *loopConn) interrupt()                              {}
func (c *loopConn) close() error                            { return nil }

// BenchmarkCoAPBlockCPU is the client's user-space time per 1024-byte
// block, stop-and-wait, with no network: the floor under any round trip.
func BenchmarkCoAPBlockCPU(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(1024)
	u, _ := parseURI("coap://127.0.0.1/fw")
	req := Request{BlockSize: 1024, Tx: TxParams{}.Defaults(), Timeout: time.Second}
	// Block numbers have 20 bits: download in images of up to 64Ki blocks.
	for left := b.N; left > 0; {
		blocks := uint32(min(left, 1<<16))
		left -= int(blocks)
		c, err := newBlockClient(newLoopConn(blocks), u, &req)
		if err != nil {
			b.Fatal(err)
		}
		var sink discardSink
		t := &transfer{sink: &sink, pos: -1, size: -1}
		if err := runBlocks(context.Background(), c, c.szx, t); err != nil {
			b.Fatal(err)
		}
		if sink.n != int64(blocks)*1024 {
			b.Fatalf("got %d bytes", sink.n)
		}
	}
}

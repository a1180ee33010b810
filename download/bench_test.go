package download

import (
	"context"
	"net"
	"net/netip"
	"testing"

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
				message.Option{ID: message.Block2, Value: encodeBlock(&bv, num, num+1 < blocks, 6)})
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
// loopback UDP; allocs/op is the per-block steady-state allocation.
func BenchmarkCoAPBlock(b *testing.B) {
	b.ReportAllocs()
	blocks := uint32(max(b.N, 1))
	srv := benchServer(b, blocks)
	addr := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	uri := "coap://" + netip.AddrPortFrom(addr.Addr(), addr.Port()).String() + "/fw"
	var sink discardSink
	b.SetBytes(1024)
	b.ResetTimer()
	if _, err := Get(context.Background(), Request{URI: uri}, &sink); err != nil {
		b.Fatal(err)
	}
	if sink.n != int64(blocks)*1024 {
		b.Fatalf("got %d bytes", sink.n)
	}
}

package download

import (
	"bufio"
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	tcpcoder "github.com/plgd-dev/go-coap/v3/tcp/coder"
)

// writeOnlyConn swallows the ACKs accept sends and never reads.
type writeOnlyConn struct{}

func (writeOnlyConn) send([]byte) error { return nil }
func (writeOnlyConn) recv([]byte, time.Time) (int, error) {
	return 0, os.ErrDeadlineExceeded
}
func (writeOnlyConn) interrupt()   {}
func (writeOnlyConn) close() error { return nil }

// FuzzAcceptDatagram feeds arbitrary datagrams to the UDP response matcher
// and the Block2/ETag/Size2 extraction: it must never panic, and whatever
// it accepts must be a well-formed block.
func FuzzAcceptDatagram(f *testing.F) {
	f.Add([]byte{0x68, 0x45, 0x30, 0x39, 1, 2, 3, 4, 0, 0, 0, 1, 0x41, 'e', 0xd1, 0x06, 0x0e, 0xff, 'x'}, false)
	f.Add([]byte{0x60, 0x00, 0x30, 0x39}, false)
	f.Add([]byte{0x48, 0x45, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0, 1, 0xff, 'a'}, true)
	f.Add([]byte{0x70, 0x00, 0x30, 0x39}, false)
	f.Fuzz(func(t *testing.T, dgram []byte, acked bool) {
		u, _ := parseURI("coap://127.0.0.1/fw")
		c, err := newBlockClient(writeOnlyConn{}, u, &Request{BlockSize: 1024, Window: 2})
		if err != nil {
			t.Fatal(err)
		}
		// Two requests in flight: the first has MID 0x3039 and token 01020304 00000001.
		c.mid = 0x3038
		c.seq = 0
		copy(c.token[:4], []byte{1, 2, 3, 4})
		for num := range uint32(2) {
			if err := c.push(num, 6, num == 0); err != nil {
				t.Fatal(err)
			}
		}
		c.slots[0].acked = acked
		if err := c.accept(dgram); err != nil {
			return
		}
		for i := range c.count {
			if s := c.slots[i]; s.done {
				if s.resp.szx > 7 || s.resp.num >= 1<<20 || len(s.resp.payload) > len(dgram) {
					t.Fatalf("bad block %+v", s.resp)
				}
			}
		}
	})
}

// FuzzReadFrame feeds arbitrary bytes to the CoAP-over-TCP frame reader
// and decoder (RFC 8323 §3.2).
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0x00, 0xe1})                               // empty CSM
	f.Add([]byte{0x41, 0x45, 0x07, 0xd1, 0x06, 0x0e, 0xff}) // short response
	f.Add([]byte{0xd1, 0x02, 0x45, 0x07})                   // 1-byte extended length
	f.Add([]byte{0xf0, 0xff, 0xff, 0xff, 0xff, 0x45})       // huge length
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := make([]byte, 4096)
		r := bufio.NewReader(bytes.NewReader(data))
		for range 8 {
			frame, err := readFrame(r, buf)
			if err != nil {
				return
			}
			var m message.Message
			m.Options = make(message.Options, 0, 16)
			if _, err := tcpcoder.DefaultCoder.Decode(frame, &m); err != nil {
				continue
			}
			var resp response
			_ = parseResponse(&m, &resp)
		}
	})
}

// FuzzContentRange checks the Content-Range parser on arbitrary headers.
func FuzzContentRange(f *testing.F) {
	f.Add("bytes 0-99/100")
	f.Add("bytes 100-199/*")
	f.Add("bytes 5-1/10")
	f.Fuzz(func(t *testing.T, s string) {
		start, size, err := parseContentRange(s)
		if err == nil && (start < 0 || (size != -1 && size <= start)) {
			t.Fatalf("%q: start %d size %d", s, start, size)
		}
	})
}

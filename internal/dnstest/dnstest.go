// Package dnstest gives tests a *net.Resolver whose DNS server runs in the
// test process and answers every query with one response code, so that a
// test of name resolution never depends on the machine's resolver.
package dnstest

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
)

// DNS response codes (RFC 1035 §4.1.1).
const (
	ServFail = 2 // the server failed: net.DNSError.IsTemporary
	NXDomain = 3 // the name does not exist: net.DNSError.IsNotFound
)

// Resolver returns a resolver whose every query is answered with rcode and
// no records, and a count of the queries it answered.
func Resolver(rcode byte) (*net.Resolver, *atomic.Int64) {
	var queries atomic.Int64
	return &net.Resolver{
		PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) {
			c, s := net.Pipe()
			go serve(s, rcode, &queries)
			return c, nil
		},
	}, &queries
}

// serve answers DNS over a stream (RFC 1035 §4.2.2: a 2-byte length, then
// the message; net.Pipe is not a PacketConn, so Go's resolver frames it
// so): each query comes back as a response with rcode.
func serve(c net.Conn, rcode byte, queries *atomic.Int64) {
	defer c.Close()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		m := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, m); err != nil || len(m) < 12 {
			return
		}
		queries.Add(1)
		m[2] |= 0x80        // QR: a response
		m[3] = 0x80 | rcode // RA, RCODE
		if _, err := c.Write(append(l[:], m...)); err != nil {
			return
		}
	}
}

package lwm2m_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// fuzzObject is a small object with every kind of resource the request
// path treats differently: opaque streamed writes, strings, integers,
// a multiple resource and an executable.
type fuzzObject struct {
	mu    sync.Mutex
	str   string
	multi map[uint16]int64
	bytes int
}

func (o *fuzzObject) ID() uint16          { return 9999 }
func (o *fuzzObject) Instances() []uint16 { return []uint16{0} }
func (o *fuzzObject) Resources(inst uint16) []lwm2m.Resource {
	return []lwm2m.Resource{
		{ID: 0, Type: model.TypeOpaque, Ops: lwm2m.OpWrite},
		{ID: 1, Type: model.TypeString, Ops: lwm2m.OpRW},
		{ID: 2, Type: model.TypeNone, Ops: lwm2m.OpExecute},
		{ID: 3, Type: model.TypeInteger, Ops: lwm2m.OpRead},
		{ID: 4, Type: model.TypeInteger, Ops: lwm2m.OpRW, Multiple: true},
	}
}

func (o *fuzzObject) Read(_ context.Context, p model.Path) ([]model.Record, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch p.Resource() {
	case 1:
		return []model.Record{{Path: p, Value: model.String(o.str)}}, nil
	case 3:
		return []model.Record{{Path: p, Value: model.Int(int64(o.bytes))}}, nil
	case 4:
		var recs []model.Record
		for i, v := range o.multi {
			recs = append(recs, model.Record{Path: p.Truncate(3).Append(i), Value: model.Int(v)})
		}
		return recs, nil
	}
	return nil, lwm2m.ErrNotFound
}

func (o *fuzzObject) Write(_ context.Context, p model.Path, recs []model.Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch p.Resource() {
	case 1:
		o.str = recs[0].Value.Str
	case 4:
		if p.Len() == 3 {
			o.multi = map[uint16]int64{}
		}
		for _, r := range recs {
			if r.Path.Len() == 4 {
				o.multi[r.Path.ResourceInstance()] = r.Value.Int
			}
		}
	default:
		o.bytes += len(recs[0].Value.Bytes)
	}
	return nil
}

func (o *fuzzObject) Execute(context.Context, model.Path, string) error { return nil }

func (o *fuzzObject) OpenStream(context.Context, model.Path, int64) (lwm2m.Stream, error) {
	return fuzzStream{o}, nil
}

type fuzzStream struct{ o *fuzzObject }

func (s fuzzStream) Write(b []byte) error {
	s.o.mu.Lock()
	s.o.bytes += len(b)
	s.o.mu.Unlock()
	return nil
}
func (s fuzzStream) Close() error { return nil }
func (s fuzzStream) Abort(error)  {}

// fuzzServer is lwm2mtest's RawServer: it takes the registration and
// passes the test's datagrams to the client from the one address the
// client's connected socket accepts.
type fuzzServer struct{ *lwm2mtest.RawServer }

// probe reads /0/0 (always 4.01 Unauthorized, LwM2M 1.1 Core §E.1) and
// waits for the answer: the handler is still serving.
func (s *fuzzServer) probe(mid uint16) bool {
	tok := []byte{0xF0, 0x22, byte(mid >> 8), byte(mid)}
	m := message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: int32(mid), Token: tok,
		Options: message.Options{{ID: message.URIPath, Value: []byte("0")}, {ID: message.URIPath, Value: []byte("0")}}}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	_, _ = coder.DefaultCoder.Encode(m, b)
	deadline := time.After(10 * time.Second)
	resend := time.NewTicker(200 * time.Millisecond)
	defer resend.Stop()
	s.SendBytes(b)
	for {
		select {
		case r := <-s.Inbox:
			if bytes.Equal(r.Token, tok) {
				return true
			}
		case <-resend.C:
			s.SendBytes(b)
		case <-deadline:
			return false
		}
	}
}

// disables reports a request that would take the client off the air on
// purpose: Execute on Disable (/1/0/4) or De-register-like deletes of /1.
func disables(b []byte) bool {
	m := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(b, &m); err != nil {
		return false
	}
	p, _ := m.Options.Path()
	p = strings.Trim(p, "/")
	return strings.HasPrefix(p, "1") && (m.Code == codes.POST || m.Code == codes.DELETE || m.Code == codes.PUT)
}

// FuzzRequest drives the whole request path of a real Client bound to a
// UDP socket: one datagram in from the server's address, whatever response
// out. The client must not panic, and must answer a normal request after.
func FuzzRequest(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	s := fuzzServer{lwm2mtest.StartRaw(f)}
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "fuzz", Server: s.URI(),
		Logger: slog.New(slog.DiscardHandler), Tx: lwm2m.TxParams{AckTimeout: 50 * time.Millisecond, MaxRetransmit: 2},
		RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	if err := c.AddObject(&fuzzObject{multi: map[uint16]int64{}}); err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	f.Cleanup(func() { cancel(); <-done })
	regCtx, regCancel := context.WithTimeout(ctx, 10*time.Second)
	defer regCancel()
	if _, err := s.WaitRegister(regCtx); err != nil {
		f.Fatal("client did not register")
	}
	var mid uint16 = 0xC000
	var mu sync.Mutex
	f.Fuzz(func(t *testing.T, datagram []byte) {
		if disables(datagram) {
			t.Skip("writes to the Server object may legitimately take the client off the air")
		}
		mu.Lock()
		defer mu.Unlock()
		s.SendBytes(datagram)
		mid++
		if !s.probe(mid) {
			t.Fatalf("client stopped answering after % x", datagram)
		}
	})
}

// fuzzSeeds are a few starting points; testdata/fuzz/FuzzRequest holds
// the rest of the committed corpus (reads, writes in every format,
// Block1 sequences, Observe, Discover, Execute, Create, Delete, bombs).
func fuzzSeeds() [][]byte {
	enc := func(m message.Message) []byte {
		n, _ := coder.DefaultCoder.Size(m)
		b := make([]byte, n)
		_, _ = coder.DefaultCoder.Encode(m, b)
		return b
	}
	path := func(segs ...string) message.Options {
		var o message.Options
		for _, s := range segs {
			o = append(o, message.Option{ID: message.URIPath, Value: []byte(s)})
		}
		return o
	}
	get := message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: 1, Token: []byte{1}, Options: path("9999", "0", "1")}
	put := message.Message{Type: message.Confirmable, Code: codes.PUT, MessageID: 2, Token: []byte{2},
		Options: append(path("9999", "0", "1"), message.Option{ID: message.ContentFormat, Value: nil}), Payload: []byte("hello")}
	// Block 0 of a Block1 push to the opaque resource, 16-byte blocks
	// (SZX 0), in base64 text and as a TLV, and a write over one MTU.
	block0 := func(mid int32, cf []byte, body string) []byte {
		return enc(message.Message{Type: message.Confirmable, Code: codes.PUT, MessageID: mid, Token: []byte{byte(mid)},
			Options: append(path("9999", "0", "0"), message.Option{ID: message.ContentFormat, Value: cf},
				message.Option{ID: message.Block1, Value: []byte{0x08}}), Payload: []byte(body)})
	}
	text0 := block0(3, nil, "QUJDRA==QUJDRA==")                        // text/plain (0)
	tlv0 := block0(4, []byte{0x2D, 0x16}, "\xc8\x00\x20abcdefghijklm") // TLV (11542), 32-byte value
	big := put
	big.MessageID, big.Payload = 5, bytes.Repeat([]byte("x"), 2000)
	return [][]byte{{}, {0x40}, {0x40, 0x01, 0x00, 0x01}, enc(get), enc(put), text0, tlv0, enc(big)}
}

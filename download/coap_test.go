package download

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// coapServer is a raw UDP CoAP server serving one resource at /fw with
// Block2, for the cases libcoap cannot produce.
type coapServer struct {
	pc net.PacketConn

	mu        sync.Mutex
	data      []byte
	etag      []byte
	blocks    []uint32                        // Block2 numbers answered, in order
	dropEvery int                             // drop every n-th request (0: never)
	separate  bool                            // answer with an empty ACK, then a CON response
	maxSZX    uint32                          // largest block size exponent the server uses
	onBlock   func(s *coapServer, num uint32) // called (locked) before answering
	drop      func(num uint32) bool           // called (locked); true: ignore the request
	// dropAnswer is called (locked) after a block was served; true: its
	// answer is lost on the way back.
	dropAnswer func(num uint32) bool
	mid        uint16 // message ID of the last separate response
	requests   int
	acks       int // empty ACKs received for our CON responses
}

func newCoAPServer(t testing.TB, data []byte, etag string) *coapServer {
	t.Helper()
	return newCoAPServerOn(t, "127.0.0.1:0", data, etag)
}

func newCoAPServerOn(t testing.TB, addr string, data []byte, etag string) *coapServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &coapServer{pc: pc, data: data, etag: []byte(etag), maxSZX: 6, mid: 1000}
	done := make(chan struct{})
	go func() { defer close(done); s.serve() }()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

func (s *coapServer) uri(path string) string {
	return "coap://" + s.pc.LocalAddr().String() + path
}

func (s *coapServer) configure(f func(*coapServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *coapServer) seen() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.blocks)
}

func (s *coapServer) serve() {
	buf := make([]byte, 2048)
	for {
		n, addr, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		for _, out := range s.answer(buf[:n]) {
			s.pc.WriteTo(out, addr)
		}
	}
}

// answer handles one datagram and returns the datagrams to send back,
// over UDP or DTLS alike.
func (s *coapServer) answer(in []byte) [][]byte {
	var m message.Message
	m.Options = make(message.Options, 0, 16)
	if _, err := coder.DefaultCoder.Decode(in, &m); err != nil {
		return nil
	}
	s.mu.Lock()
	if m.Type == message.Acknowledgement && m.Code == codes.Empty {
		s.acks++
		s.mu.Unlock()
		return nil
	}
	if m.Code != codes.GET {
		s.mu.Unlock()
		return nil
	}
	s.requests++
	if s.dropEvery > 0 && s.requests%s.dropEvery == 0 {
		s.mu.Unlock()
		return nil
	}
	resp := message.Message{Token: m.Token, MessageID: m.MessageID, Type: message.Acknowledgement, Code: codes.Content}
	loseAnswer := false
	path, _ := m.Options.Path()
	if path != "/fw" {
		resp.Code = codes.NotFound
	} else {
		num, szx := uint32(0), s.maxSZX
		if m.Options.HasOption(message.Block2) {
			v, _ := m.Options.GetBytes(message.Block2)
			rn, _, rszx, _ := decodeBlock(v)
			num, szx = rn, rszx
			if szx > s.maxSZX {
				num = num << (szx - s.maxSZX)
				szx = s.maxSZX
			}
		}
		if s.drop != nil && s.drop(num) {
			s.mu.Unlock()
			return nil
		}
		if s.onBlock != nil {
			s.onBlock(s, num)
		}
		s.blocks = append(s.blocks, num)
		loseAnswer = s.dropAnswer != nil && s.dropAnswer(num)
		bs := 16 << szx
		start := min(int(num)*bs, len(s.data))
		end := min(start+bs, len(s.data))
		more := end < len(s.data)
		var bv [3]byte
		resp.Options = message.Options{
			{ID: message.ETag, Value: slices.Clone(s.etag)},
			{ID: message.Block2, Value: slices.Clone(encodeBlock(&bv, num, more, szx))},
		}
		if m.Options.HasOption(message.Size2) {
			var sv [4]byte
			resp.Options = append(resp.Options, message.Option{ID: message.Size2, Value: sizeValue(&sv, len(s.data))})
		}
		resp.Payload = slices.Clone(s.data[start:end])
	}
	separate := s.separate
	var outs [][]byte
	if separate {
		ack := message.Message{MessageID: m.MessageID, Type: message.Acknowledgement, Code: codes.Empty}
		out := make([]byte, 16)
		k, _ := coder.DefaultCoder.Encode(ack, out)
		outs = append(outs, out[:k])
		s.mid++
		resp.Type, resp.MessageID = message.Confirmable, int32(s.mid)
	}
	s.mu.Unlock()
	out := make([]byte, 4096)
	k, err := coder.DefaultCoder.Encode(resp, out)
	if err != nil {
		panic(err)
	}
	if loseAnswer {
		return outs
	}
	return append(outs, out[:k])
}

func sizeValue(buf *[4]byte, n int) []byte {
	buf[0], buf[1], buf[2], buf[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	i := 0
	for i < 3 && buf[i] == 0 {
		i++
	}
	return buf[i:]
}

func fastTx() TxParams {
	return TxParams{AckTimeout: 20 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 4}
}

func getCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCoAPBasic(t *testing.T) {
	data := randomBytes(t, 10*1024+5)
	s := newCoAPServer(t, data, "e1")
	var sink memSink
	res, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx()}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	if string(res.ETag) != "e1" || res.Bytes != int64(len(data)) {
		t.Errorf("result = %+v", res)
	}
	if len(sink.opens) != 1 || sink.opens[0] != (openCall{"e1", 0, int64(len(data))}) {
		t.Errorf("opens = %+v, want one at 0 with Size2", sink.opens)
	}
}

func TestCoAPNotFound(t *testing.T) {
	s := newCoAPServer(t, []byte("x"), "e")
	_, err := Get(getCtx(t), Request{URI: s.uri("/nope"), Tx: fastTx()}, &memSink{})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestCoAPETagChangeRestarts(t *testing.T) {
	oldImg := randomBytes(t, 8*1024)
	newImg := randomBytes(t, 9*1024+100)
	s := newCoAPServer(t, oldImg, "old")
	s.configure(func(s *coapServer) {
		s.onBlock = func(s *coapServer, num uint32) {
			if num == 4 && string(s.etag) == "old" {
				s.data, s.etag = newImg, []byte("new")
			}
		}
	})
	var sink memSink
	res, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx()}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), newImg) {
		t.Fatal("final image is not the new image")
	}
	if res.Restarts != 1 || string(res.ETag) != "new" {
		t.Errorf("result = %+v, want 1 restart with ETag new", res)
	}
	if n := len(sink.opens); n != 2 || sink.opens[1].offset != 0 || sink.opens[1].etag != "new" {
		t.Errorf("opens = %+v, want a second Open at 0 with the new ETag", sink.opens)
	}
}

func TestCoAPResumeMatchingETag(t *testing.T) {
	data := randomBytes(t, 20*1024)
	s := newCoAPServer(t, data, "same")
	sink := &memSink{}
	sink.buf.Write(data[:5*1024+300]) // a partial copy, not block aligned
	sink.opens = nil
	res, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx(), ETag: []byte("same"), Offset: 5*1024 + 300}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	if !res.Resumed {
		t.Error("Result.Resumed = false")
	}
	want := []uint32{5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
	if got := s.seen(); !slices.Equal(got, want) {
		t.Errorf("server saw blocks %v, want %v", got, want)
	}
	if len(sink.opens) != 1 || sink.opens[0].offset != 5*1024 {
		t.Errorf("opens = %+v, want one at the block boundary 5120", sink.opens)
	}
}

func TestCoAPResumeStaleETag(t *testing.T) {
	data := randomBytes(t, 4*1024)
	s := newCoAPServer(t, data, "fresh")
	sink := &memSink{}
	sink.buf.Write(randomBytes(t, 2048))
	res, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx(), ETag: []byte("stale"), Offset: 2048}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	if res.Resumed {
		t.Error("Result.Resumed = true after a stale ETag")
	}
	if got, want := s.seen(), []uint32{2, 0, 1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("server saw blocks %v, want %v", got, want)
	}
}

func TestCoAPRetransmission(t *testing.T) {
	data := randomBytes(t, 30*1024)
	s := newCoAPServer(t, data, "e")
	s.configure(func(s *coapServer) { s.dropEvery = 3 })
	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx()}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.requests <= 30 {
		t.Errorf("server got %d requests for 30 blocks, expected retransmissions", s.requests)
	}
}

func TestCoAPSeparateResponse(t *testing.T) {
	data := randomBytes(t, 5*1024+1)
	s := newCoAPServer(t, data, "e")
	s.configure(func(s *coapServer) { s.separate = true })
	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx()}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
	// The server has read the ACK for the last response by the time the
	// client's next request arrived, except for the very last one.
	waitfor.Until(t, 5*time.Second, func() error {
		s.mu.Lock()
		acks := s.acks
		s.mu.Unlock()
		if acks < 6 {
			return fmt.Errorf("server got %d ACKs for 6 separate responses", acks)
		}
		return nil
	})
}

func TestCoAPSmallerBlockFromServer(t *testing.T) {
	data := randomBytes(t, 3000)
	s := newCoAPServer(t, data, "e")
	s.configure(func(s *coapServer) { s.maxSZX = 4 })
	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx()}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
}

func TestCoAPTimeout(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tx := TxParams{AckTimeout: 5 * time.Millisecond, MaxRetransmit: 2}
	_, err = Get(getCtx(t), Request{URI: "coap://" + pc.LocalAddr().String() + "/fw", Tx: tx, Retries: 1, RetryDelay: time.Millisecond}, &memSink{})
	if !errors.Is(err, ErrConnection) {
		t.Fatalf("err = %v, want ErrConnection", err)
	}
}

func TestCoAPCancel(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = Get(ctx, Request{URI: "coap://" + pc.LocalAddr().String() + "/fw", Tx: TxParams{AckTimeout: time.Hour}}, &memSink{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestSinkErrorReturned(t *testing.T) {
	errFull := errors.New("storage full")
	s := newCoAPServer(t, randomBytes(t, 4096), "e")
	_, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx()}, &memSink{fail: errFull})
	if !errors.Is(err, errFull) {
		t.Fatalf("err = %v, want the sink's error", err)
	}
}

func TestURIErrors(t *testing.T) {
	for uri, want := range map[string]error{
		"ftp://example.com/fw": ErrUnsupportedScheme,
		"coap://":              ErrInvalidURI,
		"::not a uri":          ErrInvalidURI,
		"/just/a/path":         ErrInvalidURI,
		"coap://h:99999/fw":    ErrInvalidURI,
		"http://h:65536/fw":    ErrInvalidURI,
	} {
		_, err := Get(context.Background(), Request{URI: uri}, &memSink{})
		if !errors.Is(err, want) {
			t.Errorf("Get(%q) = %v, want %v", uri, err, want)
		}
	}
	if got := fmt.Sprint(Schemes()); got != "[coap coaps coap+tcp coaps+tcp http https]" {
		t.Errorf("Schemes() = %s", got)
	}
}

// A connection lost mid-transfer resumes exactly where the sink stands,
// and the sink got each block once, as it arrived.
func TestCoAPLostConnectionResumesAfterBufferedWrites(t *testing.T) {
	for _, window := range []int{1, 8} {
		t.Run(fmt.Sprintf("window%d", window), func(t *testing.T) {
			data := randomBytes(t, 100*1024+99)
			s := newCoAPServer(t, data, "e")
			silent := 0
			var later []uint32 // blocks asked for after the last drop
			s.configure(func(s *coapServer) {
				s.drop = func(num uint32) bool {
					// Block 37 goes unanswered until the first attempt has given up.
					if num == 37 && silent < 5 {
						silent++
						return true
					}
					if silent == 5 {
						later = append(later, num)
					}
					return false
				}
			})
			tx := TxParams{AckTimeout: 5 * time.Millisecond, AckRandomFactor: 1, MaxRetransmit: 4}
			var sink memSink
			res, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: tx, Window: window, Retries: 2, RetryDelay: time.Millisecond}, &sink)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sink.bytes(), data) || res.Bytes != int64(len(data)) {
				t.Fatal("image differs")
			}
			// The second attempt continues where the sink stands: no new
			// Open, and block 0 is not fetched again.
			if len(sink.opens) != 1 {
				t.Errorf("opens = %+v, want just the first", sink.opens)
			}
			s.configure(func(*coapServer) {
				if silent != 5 {
					t.Errorf("block 37 was dropped %d times, want 5 (the first attempt gave up)", silent)
				}
			})
			s.configure(func(*coapServer) {
				if slices.Contains(later, 0) || !slices.Contains(later, 37) {
					t.Errorf("after the loss the server saw %v: want a resume, not block 0 again", later)
				}
			})
			if sink.maxWrite > 1024 || sink.writes != 101 {
				t.Errorf("%d writes, largest %d: want one write per block, 101 of at most 1024 bytes", sink.writes, sink.maxWrite)
			}
		})
	}
}

func TestCoAPIPv6Loopback(t *testing.T) {
	if c, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	data := randomBytes(t, 5*1024+1)
	s := newCoAPServerOn(t, "[::1]:0", data, "e")
	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx(), Window: 2}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
}

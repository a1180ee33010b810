package download

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lossy"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// batchServer serves /fw with 1024-byte Block2 blocks but answers block 0
// alone and every later request only once it holds batch of them (or the
// last block), and then in reverse order. A stop-and-wait client never
// gets past block 1; a window of batch gets every block out of order.
type batchServer struct {
	pc    net.PacketConn
	data  []byte
	batch int

	mu       sync.Mutex
	maxHeld  int // most requests held unanswered at once
	answered int
}

func newBatchServer(t *testing.T, data []byte, batch int) *batchServer {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &batchServer{pc: pc, data: data, batch: batch}
	done := make(chan struct{})
	go func() { defer close(done); s.serve() }()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

type heldRequest struct {
	m    message.Message
	num  uint32
	addr net.Addr
}

func (s *batchServer) serve() {
	buf := make([]byte, 2048)
	out := make([]byte, 4096)
	last := uint32((len(s.data) - 1) / 1024)
	var held []heldRequest
	for {
		n, addr, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		m := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(slices.Clone(buf[:n]), &m); err != nil || m.Code != codes.GET {
			continue
		}
		v, _ := m.Options.GetBytes(message.Block2)
		num, _, _, _ := decodeBlock(v)
		if slices.ContainsFunc(held, func(h heldRequest) bool { return h.m.MessageID == m.MessageID }) {
			continue // a retransmission of a held request
		}
		held = append(held, heldRequest{m, num, addr})
		s.mu.Lock()
		s.maxHeld = max(s.maxHeld, len(held))
		s.mu.Unlock()
		if num != 0 && len(held) < s.batch && num != last {
			continue
		}
		for i := len(held) - 1; i >= 0; i-- {
			h := held[i]
			start := min(int(h.num)*1024, len(s.data))
			end := min(start+1024, len(s.data))
			var bv [3]byte
			var sv [4]byte
			resp := message.Message{
				Token: h.m.Token, MessageID: h.m.MessageID, Type: message.Acknowledgement, Code: codes.Content,
				Options: message.Options{
					{ID: message.ETag, Value: []byte("b")},
					{ID: message.Block2, Value: encodeBlock(&bv, h.num, end < len(s.data), 6)},
					{ID: message.Size2, Value: sizeValue(&sv, len(s.data))},
				},
				Payload: s.data[start:end],
			}
			k, err := coder.DefaultCoder.Encode(resp, out)
			if err != nil {
				panic(err)
			}
			s.mu.Lock() // counted before it is sent, so the client cannot be quicker
			s.answered++
			s.mu.Unlock()
			s.pc.WriteTo(out[:k], h.addr)
		}
		held = held[:0]
	}
}

func TestCoAPWindowOutOfOrder(t *testing.T) {
	data := randomBytes(t, 40*1024+17)
	s := newBatchServer(t, data, 8)
	var sink memSink
	uri := "coap://" + s.pc.LocalAddr().String() + "/fw"
	// Long timeouts: nothing is lost, so nothing should be retransmitted.
	tx := TxParams{AckTimeout: 5 * time.Second, MaxRetransmit: 1}
	res, err := Get(getCtx(t), Request{URI: uri, Window: 8, Tx: tx}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) || res.Bytes != int64(len(data)) {
		t.Fatalf("image differs: got %d bytes, want %d", len(sink.bytes()), len(data))
	}
	if len(sink.opens) != 1 {
		t.Errorf("opens = %+v, want one", sink.opens)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxHeld != 8 {
		t.Errorf("at most %d requests were in flight, want 8", s.maxHeld)
	}
	if s.answered != 41 {
		t.Errorf("server answered %d requests for 41 blocks", s.answered)
	}
}

// Window 1 with the batch server shows the window test is not vacuous:
// stop-and-wait never gets block 1 answered.
func TestCoAPWindowOneIsStopAndWait(t *testing.T) {
	s := newBatchServer(t, randomBytes(t, 10*1024), 2)
	uri := "coap://" + s.pc.LocalAddr().String() + "/fw"
	tx := TxParams{AckTimeout: 5 * time.Millisecond, MaxRetransmit: 1}
	_, err := Get(getCtx(t), Request{URI: uri, Window: 1, Tx: tx}, &memSink{})
	if err == nil {
		t.Fatal("stop-and-wait finished against a server that answers only pairs")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxHeld != 1 {
		t.Errorf("%d requests were in flight at once, want 1", s.maxHeld)
	}
}

func TestCoAPWindowLossy(t *testing.T) {
	for _, window := range []int{1, 4, 16} {
		t.Run(fmt.Sprintf("window%d", window), func(t *testing.T) {
			data := randomBytes(t, 200*1024+3)
			s := newCoAPServer(t, data, "e")
			p, err := lossy.New(getCtx(t), s.pc.LocalAddr().(*net.UDPAddr), lossy.Config{
				Loss: 0.05, Duplicate: 0.05, Reorder: 0.1, Jitter: time.Millisecond, Seed: int64(window),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var sink memSink
			uri := "coap://" + p.Addr().String() + "/fw"
			tx := TxParams{AckTimeout: 20 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 8}
			if _, err := Get(getCtx(t), Request{URI: uri, Window: window, Tx: tx}, &sink); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(sink.bytes(), data) {
				t.Fatal("image differs")
			}
			if len(sink.opens) != 1 {
				t.Errorf("opens = %+v, want one", sink.opens)
			}
			st := p.Stats()
			if st.Up.Dropped+st.Down.Dropped == 0 {
				t.Error("the proxy lost nothing; the test proves nothing")
			}
		})
	}
}

func TestCoAPWindowETagChangeRestarts(t *testing.T) {
	oldImg := randomBytes(t, 30*1024)
	newImg := randomBytes(t, 31*1024+100)
	s := newCoAPServer(t, oldImg, "old")
	s.configure(func(s *coapServer) {
		s.onBlock = func(s *coapServer, num uint32) {
			if num == 10 && string(s.etag) == "old" {
				s.data, s.etag = newImg, []byte("new")
			}
		}
	})
	var sink memSink
	res, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx(), Window: 8}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), newImg) {
		t.Fatal("final image is not the new image")
	}
	if res.Restarts != 1 || string(res.ETag) != "new" {
		t.Errorf("result = %+v, want 1 restart with ETag new", res)
	}
	if n := len(sink.opens); n != 2 || sink.opens[1] != (openCall{"new", 0, int64(len(newImg))}) {
		t.Errorf("opens = %+v, want a second Open at 0 with the new ETag and size", sink.opens)
	}
}

func TestCoAPWindowResume(t *testing.T) {
	data := randomBytes(t, 20*1024)
	s := newCoAPServer(t, data, "same")
	sink := &memSink{}
	sink.buf.Write(data[:5*1024+300])
	res, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx(), Window: 4, ETag: []byte("same"), Offset: 5*1024 + 300}, sink)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) || !res.Resumed {
		t.Fatalf("image differs or not resumed: %+v", res)
	}
	got := s.seen()
	slices.Sort(got)
	if want := []uint32{5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}; !slices.Equal(got, want) {
		t.Errorf("server saw blocks %v, want each of %v once", got, want)
	}
}

func TestCoAPWindowSeparateResponses(t *testing.T) {
	data := randomBytes(t, 12*1024+1)
	s := newCoAPServer(t, data, "e")
	s.configure(func(s *coapServer) { s.separate = true })
	var sink memSink
	if _, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: fastTx(), Window: 4}, &sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.bytes(), data) {
		t.Fatal("image differs")
	}
}

func TestCoAPWindowCancel(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = Get(ctx, Request{URI: "coap://" + pc.LocalAddr().String() + "/fw", Window: 8, Tx: TxParams{AckTimeout: time.Hour}}, &memSink{})
	if err != context.Canceled {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

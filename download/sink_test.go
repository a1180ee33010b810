package download

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// memSink keeps the image in memory and checks the Sink contract: Open
// before Write, never an offset beyond what it holds.
type memSink struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	opens []openCall
	fail  error // returned by Write when set

	writes, maxWrite int // number of Write calls and the largest
}

type openCall struct {
	etag         string
	offset, size int64
}

func (s *memSink) Open(_ context.Context, etag []byte, offset, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if offset > int64(s.buf.Len()) {
		return fmt.Errorf("memSink: open at %d but holds %d", offset, s.buf.Len())
	}
	s.buf.Truncate(int(offset))
	s.opens = append(s.opens, openCall{string(etag), offset, size})
	return nil
}

func (s *memSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.opens) == 0 {
		return 0, fmt.Errorf("memSink: write before open")
	}
	if s.fail != nil {
		return 0, s.fail
	}
	s.writes++
	s.maxWrite = max(s.maxWrite, len(p))
	return s.buf.Write(p)
}

func (s *memSink) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.buf.Bytes()...)
}

// The sink gets each block as it arrives, not batched: while the server
// holds back block 5 and later, the sink gets blocks 0 to 4, in five writes.
func TestSinkGetsEachBlockAsItArrives(t *testing.T) {
	for _, window := range []int{1, 4} {
		t.Run(fmt.Sprintf("window%d", window), func(t *testing.T) {
			data := randomBytes(t, 10*1024+5)
			s := newCoAPServer(t, data, "e")
			asked := make(chan struct{})
			release := make(chan struct{})
			s.configure(func(s *coapServer) {
				s.drop = func(num uint32) bool {
					select {
					case <-release:
						return false
					default:
					}
					if num == 5 {
						select {
						case <-asked:
						default:
							close(asked)
						}
					}
					return num >= 5
				}
			})
			sink := &memSink{}
			tx := TxParams{AckTimeout: 50 * time.Millisecond, AckRandomFactor: 1, MaxRetransmit: 8}
			done := make(chan error, 1)
			go func() {
				_, err := Get(getCtx(t), Request{URI: s.uri("/fw"), Tx: tx, Window: window}, sink)
				done <- err
			}()
			select {
			case <-asked:
			case err := <-done:
				t.Fatalf("download ended before block 5: %v", err)
			}
			// With a window the request for block 5 leaves before block 4
			// has come back; block 4 follows without delay.
			var held, writes int
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				sink.mu.Lock()
				held, writes = sink.buf.Len(), sink.writes
				sink.mu.Unlock()
				if held >= 5*1024 {
					break
				}
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if held != 5*1024 || writes != 5 {
				t.Errorf("while block 5 was held back the sink had %d bytes in %d writes, want 5120 in 5", held, writes)
			}
			if !bytes.Equal(sink.bytes(), data) || sink.writes != 11 || sink.maxWrite != 1024 {
				t.Errorf("%d writes, largest %d: want 11 of at most 1024 and the image", sink.writes, sink.maxWrite)
			}
		})
	}
}

package download

import (
	"bytes"
	"context"
	"fmt"
	"sync"
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

package fwupdate

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
)

// pull is one running pull download.
type pull struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// saveEvery bounds how often progress is persisted: at most once a second,
// so that a 256 MiB image costs a few hundred fsyncs, not one per block.
const saveEvery = time.Second

// startPull starts the download goroutine; o.mu is held.
func (o *Object) startPull(uri string, etag []byte, offset int64) {
	ctx, cancel := context.WithCancel(context.Background())
	d := &pull{cancel: cancel, done: make(chan struct{})}
	o.dl = d
	o.suspended = false
	go func() {
		defer close(d.done)
		o.runPull(ctx, uri, etag, offset)
	}()
}

// stopPull cancels the running download, if any, and waits for it.
// o.mu must not be held.
func (o *Object) stopPull() {
	o.mu.Lock()
	d := o.dl
	o.dl = nil
	o.mu.Unlock()
	if d != nil {
		d.cancel()
		<-d.done
	}
}

// Suspend pauses a running pull download, keeping State Downloading and the
// bytes already stored; Reconnect resumes it. Use them around a planned
// loss of connectivity.
func (o *Object) Suspend() {
	o.stopPull()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.p.State == StateDownloading && o.p.URI != "" {
		o.suspended = true
		o.p.Offset = o.written
		o.save()
	}
}

// Reconnect resumes a suspended pull download.
func (o *Object) Reconnect() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.suspended && o.dl == nil && o.p.State == StateDownloading {
		o.startPull(o.p.URI, o.p.ETag, o.written)
	}
}

// runPull fetches uri into the handlers and moves to Downloaded or Idle.
func (o *Object) runPull(ctx context.Context, uri string, etag []byte, offset int64) {
	req := o.cfg.Download
	req.URI = uri
	req.ETag, req.Offset = nil, 0
	if sc, ok := o.h.(SecurityConfigurer); ok {
		sec, err := sc.SecurityConfig(uri)
		if err != nil {
			o.finishPull(ctx, fmt.Errorf("%w: security config: %w", download.ErrConnection, err))
			return
		}
		req.Security = sec
	}
	if req.Security == nil {
		req.Security = serverCredentials(o.c, uri)
	}
	if noCredentials(uri, req.Security) {
		o.finishPull(ctx, fmt.Errorf("%w: no credentials for %s", download.ErrUnsupportedScheme, uri))
		return
	}
	if tp, ok := o.h.(TxParamsProvider); ok {
		req.Tx = tp.CoAPTxParams(uri)
	}
	if tt, ok := o.h.(TCPTimeouter); ok {
		req.Timeout = tt.TCPRequestTimeout(uri)
	}
	if req.Logger == nil {
		req.Logger = o.log
	}
	s := &pullSink{o: o, uri: uri}
	if offset > 0 && len(etag) > 0 {
		if r, ok := o.h.(Resumer); ok {
			// CoAP resumes at a block boundary; ask the handlers for
			// exactly the bytes the transfer will continue after.
			offset = alignOffset(uri, offset, req.BlockSize)
			err := r.StreamResume(ctx, uri, etag, offset)
			if err == nil {
				req.ETag, req.Offset = etag, offset
				s.opened, s.etag = true, etag
				o.mu.Lock()
				o.written = offset
				o.mu.Unlock()
			} else {
				o.log.Warn("cannot resume, starting over", "err", err)
			}
		}
	}
	if !s.opened {
		// Whatever a previous run stored is stale.
		o.mu.Lock()
		o.written = 0
		o.mu.Unlock()
		if offset > 0 {
			if err := o.h.Reset(); err != nil {
				o.log.Warn("reset handler failed", "err", err)
			}
		}
	}
	_, err := download.Get(ctx, req, s)
	o.finishPull(ctx, err)
}

// alignOffset rounds a resume offset down to the CoAP block boundary the
// downloader will use.
func alignOffset(uri string, offset int64, blockSize int) int64 {
	u, err := url.Parse(uri)
	if err != nil || !strings.HasPrefix(strings.ToLower(u.Scheme), "coap") {
		return offset
	}
	if blockSize <= 0 {
		blockSize = 1024
	}
	return offset - offset%int64(blockSize)
}

func (o *Object) finishPull(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // cancelled: whoever cancelled decides the state
	}
	// A download error defaults to Connection lost; a package that
	// StreamFinish refuses, to Integrity check failure.
	dflt := ResultConnectionLost
	if err == nil {
		err, dflt = o.h.StreamFinish(), ResultIntegrity
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dl = nil
	if err != nil {
		o.log.Warn("download failed", "uri", o.p.URI, "err", err)
		o.transition(evFailed, resultOf(err, dflt))
		return
	}
	o.transition(evDownloaded, 0)
}

// pullSink passes downloaded bytes to the handlers and keeps the resume
// point persisted.
type pullSink struct {
	o      *Object
	uri    string
	etag   []byte
	opened bool
}

func (s *pullSink) Open(ctx context.Context, etag []byte, offset, size int64) error {
	o := s.o
	o.mu.Lock()
	written := o.written
	o.mu.Unlock()
	switch {
	case s.opened && offset == written && string(etag) == string(s.etag):
		// Continuing where we stand.
	case offset > 0:
		r, ok := o.h.(Resumer)
		if !ok {
			return fmt.Errorf("%w: handlers cannot resume at %d", errNoResume, offset)
		}
		if err := r.StreamResume(ctx, s.uri, etag, offset); err != nil {
			return err
		}
	default:
		if s.opened {
			// The image changed under us (new ETag): drop what we have.
			if err := o.h.Reset(); err != nil {
				return err
			}
		}
		if err := o.h.StreamOpen(ctx, s.uri, etag); err != nil {
			return err
		}
	}
	s.opened = true
	s.etag = append([]byte(nil), etag...)
	o.mu.Lock()
	defer o.mu.Unlock()
	if max := o.cfg.MaxPackageSize; max > 0 && size > max {
		return fmt.Errorf("%w: package is %d bytes, at most %d fit", ErrNoSpace, size, max)
	}
	o.written, o.total = offset, size
	o.p.ETag, o.p.Offset = s.etag, offset
	o.save()
	return nil
}

var errNoResume = errors.New("fwupdate: cannot resume")

func (s *pullSink) Write(p []byte) (int, error) {
	o := s.o
	o.mu.Lock()
	over := o.cfg.MaxPackageSize > 0 && o.written+int64(len(p)) > o.cfg.MaxPackageSize
	o.mu.Unlock()
	if over {
		return 0, fmt.Errorf("%w: package exceeds %d bytes", ErrNoSpace, o.cfg.MaxPackageSize)
	}
	if err := o.h.StreamWrite(p); err != nil {
		return 0, err
	}
	o.mu.Lock()
	o.written += int64(len(p))
	if time.Since(o.savedAt) >= saveEvery {
		o.p.Offset = o.written
		o.save()
	}
	written, total := o.written, o.total
	o.mu.Unlock()
	if o.cfg.Progress != nil {
		o.cfg.Progress(written, total)
	}
	return len(p), nil
}

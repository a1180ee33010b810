package fwupdate

import (
	"context"
	"errors"
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// pushStream receives a Package written block by block (RFC 7959 Block1).
// The client has already put the blocks in order and absorbed duplicates.
type pushStream struct {
	o *Object
}

// OpenStream implements lwm2m.StreamWriter for /5/0/0: the first block of
// a push. size is the announced total (Size1), or -1.
func (o *Object) OpenStream(ctx context.Context, res model.Path, size int64) (lwm2m.Stream, error) {
	if res.Resource() != ResPackage {
		return nil, lwm2m.ErrMethodNotAllowed
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := lookup(o.p.State, evPackage); r.refused() {
		return nil, r.err
	}
	if max := o.cfg.MaxPackageSize; max > 0 && size > max {
		o.log.Warn("pushed package too large", "size", size, "max", max)
		o.p.Result = ResultNoSpace
		o.save()
		o.c.Changed(model.NewPath(ObjectID, 0, ResUpdateResult))
		return nil, &lwm2m.TooLargeError{Max: max}
	}
	o.written, o.total = 0, size
	if err := o.h.StreamOpen(ctx, "", nil); err != nil {
		o.log.Warn("stream open failed", "err", err)
		o.transition(evPackage, 0)
		o.transition(evFailed, resultOf(err, ResultNoSpace))
		return nil, storageErr(err)
	}
	o.transition(evPackage, 0)
	s := &pushStream{o: o}
	o.stream = s
	return s, nil
}

// storageErr picks the CoAP answer to a failed write: 4.13 for lack of
// space, 5.00 otherwise.
func storageErr(err error) error {
	if resultOf(err, ResultUpdateFailed) == ResultNoSpace {
		return fmt.Errorf("%w: %w", lwm2m.ErrTooLarge, err)
	}
	return fmt.Errorf("%w: %w", lwm2m.ErrInternal, err)
}

func (s *pushStream) Write(chunk []byte) error {
	o := s.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stream != s {
		return lwm2m.ErrIncomplete // reset or cancelled meanwhile
	}
	if max := o.cfg.MaxPackageSize; max > 0 && o.written+int64(len(chunk)) > max {
		o.transition(evFailed, ResultNoSpace)
		return &lwm2m.TooLargeError{Max: max}
	}
	if err := o.h.StreamWrite(chunk); err != nil {
		o.log.Warn("stream write failed", "err", err, "offset", o.written)
		o.transition(evFailed, resultOf(err, ResultNoSpace))
		return storageErr(err)
	}
	o.written += int64(len(chunk))
	if o.cfg.Progress != nil {
		o.cfg.Progress(o.written, o.total)
	}
	return nil
}

// Close finishes the package. A package that fails verification still
// gets 2.04: the transfer worked, and Update Result says why it is refused.
func (s *pushStream) Close() error {
	o := s.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stream != s {
		return lwm2m.ErrIncomplete
	}
	o.stream = nil
	if err := o.h.StreamFinish(); err != nil {
		o.log.Warn("package refused", "err", err)
		o.transition(evFailed, resultOf(err, ResultIntegrity))
		return nil
	}
	o.transition(evDownloaded, 0)
	return nil
}

// Abort drops a push the server broke off: a gap (4.08), a new transfer,
// or silence longer than the exchange lifetime.
func (s *pushStream) Abort(err error) {
	o := s.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stream != s {
		return
	}
	o.stream = nil
	o.log.Warn("push aborted", "err", err, "offset", o.written)
	res := ResultInitial
	if errors.Is(err, lwm2m.ErrTransferTimeout) {
		res = ResultConnectionLost
	}
	o.transition(evFailed, res)
}

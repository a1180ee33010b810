package lwm2m

import (
	"context"
	"errors"
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Operations a resource allows, as in the OMA object registry's "Operations" column.
type Ops uint8

const (
	OpRead Ops = 1 << iota
	OpWrite
	OpExecute

	OpRW = OpRead | OpWrite
)

// Resource describes one resource of an object instance.
type Resource struct {
	ID       uint16
	Type     model.Type
	Ops      Ops
	Multiple bool // a multiple-instance resource
}

// Object serves one LwM2M object. It is the only interface an application
// must implement to add an object; everything else is optional and found by
// type assertion (Writer, Executor, Creator, Deleter, Versioner,
// StreamWriter), the way net/http finds an http.Flusher.
//
// Methods may be called concurrently from the client's request handling and
// its notification loop.
type Object interface {
	// ID is the object ID, such as 3 for Device.
	ID() uint16
	// Instances lists the instance IDs present now, in ascending order.
	// The client only reads the slice, so an object may return the same
	// one every time.
	Instances() []uint16
	// Resources describes the resources present in instance inst.
	Resources(inst uint16) []Resource
	// Read returns the value of the resource at res (a three-level path):
	// one record at res for a single-instance resource, or one record per
	// resource instance (four-level paths) for a multiple resource.
	Read(ctx context.Context, res model.Path) ([]model.Record, error)
}

// Writer is implemented by objects with writable resources. p is the
// resource or resource instance written; recs hold its new value(s), each
// converted to the resource's type. For a multiple resource written as a
// whole, recs replace all of its instances.
type Writer interface {
	Write(ctx context.Context, p model.Path, recs []model.Record) error
}

// Executor is implemented by objects with executable resources. args is the
// raw argument string of LwM2M 1.1 Core §5.4.5 ("0='a',1").
type Executor interface {
	Execute(ctx context.Context, res model.Path, args string) error
}

// Creator is implemented by objects whose instances the server may create.
// recs carry the initial values under /obj/inst.
type Creator interface {
	Create(ctx context.Context, inst uint16, recs []model.Record) error
}

// Deleter is implemented by objects whose instances the server may delete.
type Deleter interface {
	Delete(ctx context.Context, inst uint16) error
}

// Versioner is implemented by objects whose version is not 1.0; the
// version is sent in the registration payload as ver= (LwM2M 1.1 Core §6.2.1).
type Versioner interface {
	Version() string
}

// Stream receives one block-wise write (RFC 7959 Block1) in order, block by
// block, without the body ever being held whole. The client absorbs
// retransmitted blocks and answers gaps with 4.08 itself; a Stream sees each
// byte once.
type Stream interface {
	// Write takes the next chunk. It may run in the connection's read
	// loop, so it must not wait for anything from the server.
	Write(chunk []byte) error
	// Close is called after the last block; the transfer is complete.
	Close() error
	// Abort drops the transfer: a gap, a new transfer, or a timeout. err says why.
	Abort(err error)
}

// StreamWriter is implemented by objects that take large writes, such as the
// Firmware Update object's Package. Without it, a block-wise write is
// assembled in memory up to Config.MaxAssembledWrite and passed to Writer.
//
// OpenStream is called on the first block. size is the announced total
// (Size1), or -1. The Stream gets the value's bytes whatever the format
// the server wrote them in: raw (application/octet-stream), base64
// (text/plain) or a TLV, decoded block by block; size is -1 for the last
// two, whose Size1 counts the encoded body. A small write that needs no
// Block1 arrives through Writer.
type StreamWriter interface {
	OpenStream(ctx context.Context, res model.Path, size int64) (Stream, error)
}

// Errors that objects return to choose the CoAP response code. Wrap them
// with %w to add detail; the client logs the detail and sends the code.
var (
	ErrBadRequest       = errors.New("lwm2m: bad request")                // 4.00
	ErrUnauthorized     = errors.New("lwm2m: unauthorized")               // 4.01
	ErrNotFound         = errors.New("lwm2m: not found")                  // 4.04
	ErrMethodNotAllowed = errors.New("lwm2m: method not allowed")         // 4.05
	ErrNotAcceptable    = errors.New("lwm2m: not acceptable")             // 4.06
	ErrIncomplete       = errors.New("lwm2m: request entity incomplete")  // 4.08
	ErrTooLarge         = errors.New("lwm2m: request entity too large")   // 4.13
	ErrUnsupportedType  = errors.New("lwm2m: unsupported content format") // 4.15
	ErrInternal         = errors.New("lwm2m: internal error")             // 5.00
)

// TooLargeError is an ErrTooLarge that tells the peer the size it may send
// (the Size1 option of RFC 7959 §4).
type TooLargeError struct {
	Max int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("lwm2m: request entity too large: at most %d bytes", e.Max)
}

func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// notifier is what a Static calls when one of its values changes, so that
// observers are notified. The Client is one.
type notifier interface {
	Changed(p model.Path)
}

package fwupdate

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/fwpkg"
)

// Handlers is what an application implements to receive, verify and apply
// firmware. It mirrors Anjay's fw_update handlers one to one. The module
// calls the methods from one goroutine at a time, never concurrently.
type Handlers interface {
	// StreamOpen prepares storage for a new package. packageURI is empty
	// for a push (a Write to /5/0/0). For a pull it is called when the
	// first response arrives, so etag is that response's ETag (nil if the
	// server gave none) and can be kept for resumption.
	StreamOpen(ctx context.Context, packageURI string, etag []byte) error
	// StreamWrite appends the next chunk of the package. It is called per
	// block, never with the whole image, and must not retain chunk. During
	// a push it may run in the client connection's read loop: it must not
	// wait for anything from the LwM2M server, and while it runs no other
	// datagram is read.
	StreamWrite(chunk []byte) error
	// StreamFinish is called when the package is complete: verify it. An
	// error wrapping ErrIntegrity, ErrUnsupportedPackage, ErrNoSpace or
	// ErrNoMemory chooses the Update Result; any other error gives
	// Integrity check failure (5).
	StreamFinish() error
	// Reset drops the package, complete or not, and frees its storage.
	Reset() error
	// PerformUpgrade applies the downloaded package. It may never return,
	// for example when it re-execs the program or reboots the device; the
	// persisted Updating state then tells the next boot to report the
	// outcome with SetResult. If it returns nil, the upgrade is under way
	// and the application reports its end with SetResult, as with Anjay.
	// An error gives Update failed (8), or the result it wraps; ErrDeferred
	// keeps the package in Downloaded with result Deferred (11).
	PerformUpgrade(ctx context.Context) error
}

// PackageInfo is implemented by handlers that can name the downloaded
// package; it feeds PkgName (/5/0/6) and PkgVersion (/5/0/7).
type PackageInfo interface {
	PackageName() string
	PackageVersion() string
}

// SecurityConfigurer is implemented by handlers that supply (D)TLS
// credentials for a coaps, coaps+tcp or https download.
type SecurityConfigurer interface {
	SecurityConfig(packageURI string) (*download.Security, error)
}

// TxParamsProvider is implemented by handlers that choose the CoAP
// transmission parameters of a download.
type TxParamsProvider interface {
	CoAPTxParams(packageURI string) download.TxParams
}

// TCPTimeouter is implemented by handlers that choose the request timeout
// of a CoAP-over-TCP or HTTP download.
type TCPTimeouter interface {
	TCPRequestTimeout(packageURI string) time.Duration
}

// Resumer is implemented by handlers whose storage keeps a partial package
// across a lost connection or a reboot. Without it an interrupted pull
// starts again from the first byte.
type Resumer interface {
	// StreamResume reopens the package fetched from packageURI under etag
	// to continue after its first offset bytes; anything stored beyond
	// them must be dropped. An error (such as fewer bytes stored) makes the
	// module start over with Reset and StreamOpen.
	StreamResume(ctx context.Context, packageURI string, etag []byte, offset int64) error
}

// Errors that handlers return to choose the Update Result. Wrap them with
// %w to add detail. fwpkg's ErrNotPackage, ErrIntegrity and ErrTooLarge,
// and ENOSPC, need no wrapping: they mean results 6, 5 and 2.
var (
	ErrNoSpace            = errors.New("fwupdate: not enough storage")       // result 2
	ErrNoMemory           = errors.New("fwupdate: out of memory")            // result 3
	ErrIntegrity          = errors.New("fwupdate: integrity check failure")  // result 5
	ErrUnsupportedPackage = errors.New("fwupdate: unsupported package type") // result 6
	ErrUpdateFailed       = errors.New("fwupdate: firmware update failed")   // result 8
	ErrDeferred           = errors.New("fwupdate: update deferred")          // result 11
)

// resultOf maps a handler's or downloader's error to an Update Result.
// The sentinels above come first: they are the handler's own choice.
func resultOf(err error, dflt Result) Result {
	switch {
	case errors.Is(err, ErrNoSpace):
		return ResultNoSpace
	case errors.Is(err, ErrNoMemory):
		return ResultNoMemory
	case errors.Is(err, ErrIntegrity):
		return ResultIntegrity
	case errors.Is(err, ErrUnsupportedPackage):
		return ResultUnsupportedPackage
	case errors.Is(err, ErrUpdateFailed):
		return ResultUpdateFailed
	case errors.Is(err, ErrDeferred):
		return ResultDeferred
	// A handler may return fwpkg's verdicts and the file system's errors
	// as they are (docs/PACKAGE_FORMAT.md, "Checks").
	case errors.Is(err, fwpkg.ErrNotPackage):
		return ResultUnsupportedPackage
	case errors.Is(err, fwpkg.ErrIntegrity):
		return ResultIntegrity
	case errors.Is(err, fwpkg.ErrTooLarge), errors.Is(err, syscall.ENOSPC):
		return ResultNoSpace
	case errors.Is(err, download.ErrNotFound), errors.Is(err, download.ErrInvalidURI):
		return ResultInvalidURI
	case errors.Is(err, download.ErrUnsupportedScheme):
		return ResultUnsupportedProtocol
	case errors.Is(err, download.ErrConnection), errors.Is(err, download.ErrETagChanged), errors.Is(err, download.ErrProtocol):
		return ResultConnectionLost
	}
	return dflt
}

// Package download fetches a firmware image by pull, streaming it block by
// block into a Sink: CoAP and CoAPS with Block2 (RFC 7252, RFC 7959), CoAP over
// TCP and TLS with BERT (RFC 8323) and HTTP(S) with Range requests (RFC 9110).
//
// Memory does not grow with the image: each block is handed to the Sink as
// it arrives, in order, exactly once (a CoAP block, a BERT block over TCP,
// or what one read of an HTTP body returned). A transfer that loses its
// connection resumes from the bytes already written when the server's ETag
// still matches, and restarts from zero when it does not, so two images are
// never stitched.
package download

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lwm2m-fota/lwm2m/coaptx"
)

// Sentinel errors. Get wraps them with detail; test with errors.Is.
var (
	// ErrInvalidURI: the URI cannot be parsed (LwM2M /5 Update Result 7).
	ErrInvalidURI = errors.New("download: invalid URI")
	// ErrUnsupportedScheme: this build cannot fetch the URI's scheme (Result 9).
	ErrUnsupportedScheme = errors.New("download: unsupported scheme")
	// ErrUnresolvable: the URI's host name does not exist (the resolver
	// answered NXDOMAIN or no such host). It wraps ErrInvalidURI (Result 7)
	// and is never retried: a name that does not resolve is not a lost
	// connection. A temporary resolver failure is retried like one.
	ErrUnresolvable = fmt.Errorf("%w: host name does not resolve", ErrInvalidURI)
	// ErrNotFound: CoAP 4.04 or HTTP 404 (Result 7).
	ErrNotFound = errors.New("download: not found")
	// ErrConnection: the connection failed or was lost after all retries, a
	// request timed out, or the (D)TLS handshake or certificate check failed (Result 4).
	ErrConnection = errors.New("download: connection failed")
	// ErrETagChanged: the image kept changing during the transfer, so no
	// consistent copy could be fetched.
	ErrETagChanged = errors.New("download: ETag kept changing")
	// ErrProtocol: the server answered with an error code or broke the protocol.
	ErrProtocol = errors.New("download: server error")
)

// Sink receives the image.
//
// Open is called before the first Write and again whenever writing continues
// somewhere other than where the last Write ended: offset is where writing
// begins (0 means from scratch, so anything held must be discarded; a
// positive offset means keep the first offset bytes and drop the rest), etag
// is the ETag of the response that starts the run (nil if none) and size is
// the total size if the server said so, else -1.
//
// Write has io.Writer semantics and must not retain p. It is called once
// per block as the block arrives, never with bytes held back, so that what
// a Sink has been given is what the transfer has received; a Sink that
// writes a file may buffer on its own. An error from Open or Write ends
// the download and is returned by Get wrapped with %w.
type Sink interface {
	Open(ctx context.Context, etag []byte, offset, size int64) error
	Write(p []byte) (int, error)
}

// Request describes one download. The zero value of every field but URI is usable.
type Request struct {
	URI string
	// ETag and Offset resume a download: Offset bytes are already held and
	// were fetched under ETag. The transfer continues at Offset only if the
	// server's ETag is non-empty and equal; otherwise it starts at 0. CoAP
	// rounds Offset down to a block boundary and tells Sink.Open the real offset.
	ETag   []byte
	Offset int64
	// Security holds credentials for coaps, coaps+tcp and https. Nil: none
	// (https then trusts the system roots).
	Security *Security
	// Tx are the CoAP transmission parameters for coap and coaps.
	Tx TxParams
	// Timeout bounds one request over TCP or HTTP, and the wait for a CoAP
	// separate response. Zero means 30s.
	Timeout time.Duration
	// BlockSize is the CoAP block size, a power of two from 16 to 1024.
	// Zero means 1024. Over TCP a peer that supports block-wise transfer is
	// asked for BERT blocks (RFC 8323 §6) instead.
	BlockSize int
	// Window is how many CoAP Block2 requests may be in flight at once over
	// UDP or DTLS (RFC 7252 §4.7 NSTART, RFC 9177 §2), for blocks k to
	// k+Window-1. Zero or 1 means stop-and-wait, the RFC's default; use
	// more only with servers that allow it. Blocks still reach the Sink in
	// order, at most Window of them are held, each request is retransmitted
	// on its own, and the window opens only once the first response gave
	// the size (Size2). At most MaxWindow.
	Window int
	// Retries is how many times a lost connection is re-established,
	// resuming from the bytes written; after that Get returns ErrConnection.
	Retries int
	// RetryDelay is the wait before each retry. Zero means 1s.
	RetryDelay time.Duration
	// OnRetry, if not nil, is called before each retry with the error that
	// ended the attempt and the wait before the next one, so that a
	// program can tell its user why nothing moves.
	OnRetry func(err error, delay time.Duration)
	// Logger receives Debug logs per attempt, never per block. Nil: none.
	Logger *slog.Logger
	// Resolver looks up the URI's host name for every scheme. Nil means
	// net.DefaultResolver.
	Resolver *net.Resolver
}

// Security holds (D)TLS credentials.
type Security struct {
	// PSKIdentity and PSK select DTLS with a pre-shared key (coaps only).
	PSKIdentity string
	PSK         []byte
	// Certificates are client certificates presented to the server.
	Certificates []tls.Certificate
	// ServerCertificate pins a coaps server: the DER of its certificate or
	// of its public key (LwM2M Certificate Usage 3, as /0/x/4 does); no
	// chain or name check. It takes precedence over RootCAs for coaps.
	ServerCertificate []byte
	// RootCAs verifies the server; nil means the system roots.
	RootCAs *x509.CertPool
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
}

// TxParams are the CoAP transmission parameters of RFC 7252 §4.8, the
// same as the LwM2M server connection's. A zero field takes the RFC's
// default.
type TxParams = coaptx.Params

// Result describes a finished download.
type Result struct {
	Bytes    int64  // total size of the image held by the sink
	ETag     []byte // ETag of the image, nil if the server gave none
	Resumed  bool   // the transfer continued from Request.Offset
	Restarts int    // times the transfer started again from 0 after a change of ETag
}

// Schemes returns exactly the URI schemes Get supports.
func Schemes() []string {
	return []string{"coap", "coaps", "coap+tcp", "coaps+tcp", "http", "https"}
}

// ValidateURI checks uri as Get does before any traffic: ErrInvalidURI for
// a URI that cannot be fetched as written (no host, a port outside
// 1-65535), ErrUnsupportedScheme for a scheme not in Schemes.
func ValidateURI(uri string) error {
	_, err := parseURI(uri)
	return err
}

// Get downloads req.URI into sink. It returns when the image is complete,
// when it fails, or at once with ctx.Err() when ctx is cancelled.
func Get(ctx context.Context, req Request, sink Sink) (Result, error) {
	u, err := parseURI(req.URI)
	if err != nil {
		return Result{}, err
	}
	if req.BlockSize == 0 {
		req.BlockSize = 1024
	}
	if _, err := szxOf(req.BlockSize); err != nil {
		return Result{}, err
	}
	if req.Timeout <= 0 {
		req.Timeout = 30 * time.Second
	}
	if req.RetryDelay <= 0 {
		req.RetryDelay = time.Second
	}
	if req.Logger == nil {
		req.Logger = slog.New(slog.DiscardHandler)
	}
	req.Tx = req.Tx.Defaults()

	var fetch func(context.Context, *url.URL, *Request, *transfer) error
	switch u.Scheme {
	case "coap", "coaps":
		fetch = getCoAP
	case "coap+tcp", "coaps+tcp":
		fetch = getCoAPTCP
	case "http", "https":
		fetch = getHTTP
	}

	t := &transfer{sink: sink, pos: -1, size: -1}
	if req.Offset > 0 && len(req.ETag) > 0 {
		t.wantETag = req.ETag
		t.resumeAt = req.Offset
	}
	for attempt := 0; ; attempt++ {
		req.Logger.Debug("download attempt", "uri", req.URI, "attempt", attempt, "offset", t.resumeAt)
		err := fetch(ctx, u, &req, t)
		if err == nil {
			req.Logger.Debug("download complete", "uri", req.URI, "bytes", t.pos, "restarts", t.restarts)
			return Result{Bytes: t.pos, ETag: t.etag, Resumed: t.resumed, Restarts: t.restarts}, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Result{}, ctxErr
		}
		if unresolvable(err) {
			return Result{}, fmt.Errorf("%w: %w", ErrUnresolvable, err)
		}
		var te *transientError
		if !errors.As(err, &te) {
			return Result{}, err
		}
		if attempt >= req.Retries {
			return Result{}, fmt.Errorf("%w: %w", ErrConnection, err)
		}
		req.Logger.Debug("download interrupted; will resume", "uri", req.URI, "err", err, "written", t.pos)
		if req.OnRetry != nil {
			req.OnRetry(err, req.RetryDelay)
		}
		// Resume where the sink stands, but only under the same ETag.
		if t.pos > 0 && len(t.etag) > 0 {
			t.wantETag, t.resumeAt = t.etag, t.pos
		} else {
			t.wantETag, t.resumeAt = nil, 0
		}
		tm := time.NewTimer(req.RetryDelay)
		select {
		case <-ctx.Done():
			tm.Stop()
			return Result{}, ctx.Err()
		case <-tm.C:
		}
	}
}

// unresolvable reports that err says the host name does not exist, as
// opposed to a resolver that failed for now (IsTemporary, IsTimeout).
func unresolvable(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && !de.IsTemporary && !de.IsTimeout
}

// transientError marks a failure worth retrying: a lost connection or a timeout.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func transient(err error) error { return &transientError{err} }

// transfer is the state of one Get across reconnections.
type transfer struct {
	sink     Sink
	pos      int64 // bytes the sink holds from the current run; -1 before the first Open
	etag     []byte
	size     int64
	restarts int
	resumed  bool
	// Where the next attempt should start, and the ETag that must match for it.
	resumeAt int64
	wantETag []byte
}

// open starts (or restarts) writing at offset. It skips the call to
// Sink.Open when the sink already stands at offset under the same ETag.
func (t *transfer) open(ctx context.Context, etag []byte, offset, size int64) error {
	if size >= 0 {
		t.size = size
	}
	if offset == t.pos && offset > 0 && string(etag) == string(t.etag) {
		return nil
	}
	if offset == 0 && t.pos > 0 {
		t.restarts++
	}
	if offset > 0 && t.pos < 0 {
		t.resumed = true
	}
	t.etag = append(t.etag[:0:0], etag...)
	t.pos = offset
	if err := t.sink.Open(ctx, t.etag, offset, t.size); err != nil {
		return fmt.Errorf("download: sink open: %w", err)
	}
	return nil
}

// write passes one block on to the sink at once.
func (t *transfer) write(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	t.pos += int64(len(p))
	return t.writeSink(p)
}

// writeSink writes p, which pos already counts, to the sink.
func (t *transfer) writeSink(p []byte) error {
	n, err := t.sink.Write(p)
	t.pos -= int64(len(p) - n)
	if err != nil {
		return fmt.Errorf("download: sink write: %w", err)
	}
	if n != len(p) {
		return fmt.Errorf("download: sink write: short write %d of %d", n, len(p))
	}
	return nil
}

// maxRestarts bounds restarts caused by a changing ETag, so a server whose
// resource changes faster than it can be fetched cannot loop us forever.
const maxRestarts = 8

func (t *transfer) restartAllowed() error {
	if t.restarts >= maxRestarts {
		return fmt.Errorf("%w: %d restarts", ErrETagChanged, t.restarts)
	}
	return nil
}

// CheckURI reports whether Get can fetch uri at all: that it parses, has
// a host and a valid port, and that its scheme is one of Schemes. The
// error wraps ErrInvalidURI or ErrUnsupportedScheme. It resolves nothing.
func CheckURI(uri string) error {
	_, err := parseURI(uri)
	return err
}

func parseURI(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidURI, err)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("%w: %q has no scheme", ErrInvalidURI, s)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	supported := false
	for _, sc := range Schemes() {
		if sc == u.Scheme {
			supported = true
		}
	}
	if !supported {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedScheme, u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %q has no host", ErrInvalidURI, s)
	}
	// url.Parse takes any digits as a port; 0 cannot be connected to.
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("%w: port %q", ErrInvalidURI, p)
		}
	}
	return u, nil
}

func szxOf(size int) (uint32, error) {
	for szx := uint32(0); szx <= 6; szx++ {
		if 16<<szx == size {
			return szx, nil
		}
	}
	return 0, fmt.Errorf("download: block size %d is not a power of two from 16 to 1024", size)
}

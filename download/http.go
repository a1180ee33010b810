package download

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// httpBufSize is the fixed copy buffer between the response body and the sink.
const httpBufSize = 32 << 10

// getHTTP fetches an http or https URI, streaming the body into the sink.
// A resume sends Range with If-Match (RFC 9110 §13.1.1, §14.2), and only
// with a strong ETag: a weak one does not promise byte-identical content.
func getHTTP(ctx context.Context, u *url.URL, req *Request, t *transfer) error {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Resolver: req.Resolver}).DialContext,
		TLSClientConfig:       tlsConfig(u, req.Security),
		TLSHandshakeTimeout:   req.Timeout,
		ResponseHeaderTimeout: req.Timeout,
		ForceAttemptHTTP2:     true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	for {
		offset := int64(0)
		var ifMatch string
		if t.resumeAt > 0 && isStrongETag(t.wantETag) {
			offset, ifMatch = t.resumeAt, string(t.wantETag)
		}
		again, err := httpAttempt(ctx, client, u, req, t, offset, ifMatch)
		if err != nil || !again {
			return err
		}
	}
}

// httpAttempt performs one request. again reports that the server refused
// the resume and the download should start over from 0.
func httpAttempt(ctx context.Context, client *http.Client, u *url.URL, req *Request, t *transfer, offset int64, ifMatch string) (again bool, err error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hreq, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrInvalidURI, err)
	}
	if offset > 0 {
		hreq.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		hreq.Header.Set("If-Match", ifMatch)
	}
	resp, err := client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, httpDoError(u, err)
	}
	defer resp.Body.Close()

	etag := []byte(resp.Header.Get("ETag"))
	if len(etag) == 0 {
		etag = nil
	}
	switch resp.StatusCode {
	case http.StatusOK:
		// A 200 to a ranged request means the server ignored Range: the body
		// is the whole image, so start over (RFC 9110 §14.2).
		if err := t.open(ctx, etag, 0, resp.ContentLength); err != nil {
			return false, err
		}
	case http.StatusPartialContent:
		if offset == 0 {
			return false, fmt.Errorf("%w: HTTP 206 to a request without Range", ErrProtocol)
		}
		start, size, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return false, err
		}
		if start != offset {
			return false, fmt.Errorf("%w: Content-Range starts at %d, asked for %d", ErrProtocol, start, offset)
		}
		if etag == nil {
			etag = t.wantETag // If-Match held, so the ETag is the one we sent
		}
		if err := t.open(ctx, etag, offset, size); err != nil {
			return false, err
		}
	case http.StatusPreconditionFailed, http.StatusRequestedRangeNotSatisfiable:
		if offset == 0 {
			return false, fmt.Errorf("%w: HTTP %s", ErrProtocol, resp.Status)
		}
		// The image changed since the partial copy was made (or the range
		// no longer fits): fetch it again from 0 without If-Match.
		req.Logger.Debug("http resume refused; restarting", "uri", req.URI, "status", resp.StatusCode)
		if err := t.restartAllowed(); err != nil {
			return false, err
		}
		if t.pos <= 0 {
			t.restarts++
		}
		t.resumeAt, t.wantETag = 0, nil
		return true, nil
	case http.StatusNotFound, http.StatusGone:
		return false, fmt.Errorf("%w: HTTP %s", ErrNotFound, resp.Status)
	default:
		return false, fmt.Errorf("%w: HTTP %s", ErrProtocol, resp.Status)
	}

	// Copy with an idle timeout: a stalled body fails after req.Timeout
	// without bounding the whole transfer.
	errStalled := errors.New("download: body stalled")
	idle := time.AfterFunc(req.Timeout, func() { cancel(errStalled) })
	defer idle.Stop()
	buf := make([]byte, httpBufSize)
	for {
		n, rerr := resp.Body.Read(buf)
		idle.Reset(req.Timeout)
		if n > 0 {
			if err := t.write(buf[:n]); err != nil {
				return false, err
			}
		}
		if rerr == io.EOF {
			return false, nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if errors.Is(context.Cause(rctx), errStalled) {
				rerr = fmt.Errorf("%w after %v", errStalled, req.Timeout)
			}
			return false, transient(fmt.Errorf("download: reading body: %w", rerr))
		}
	}
}

func httpDoError(u *url.URL, err error) error {
	var (
		certErr    *tls.CertificateVerificationError
		unknownErr x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		alertErr   tls.AlertError
	)
	if errors.As(err, &certErr) || errors.As(err, &unknownErr) || errors.As(err, &hostErr) || errors.As(err, &alertErr) {
		return fmt.Errorf("%w: tls with %s: %w", ErrConnection, u.Host, err)
	}
	return transient(fmt.Errorf("download: %w", err))
}

func isStrongETag(etag []byte) bool {
	return len(etag) >= 2 && etag[0] == '"' && etag[len(etag)-1] == '"'
}

// parseContentRange parses "bytes START-END/SIZE" (RFC 9110 §14.4); size
// is -1 when given as "*".
func parseContentRange(s string) (start, size int64, err error) {
	bad := fmt.Errorf("%w: bad Content-Range %q", ErrProtocol, s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, bad
	}
	rng, total, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, bad
	}
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, bad
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, bad
	}
	size = -1
	if total != "*" {
		if size, err = strconv.ParseInt(total, 10, 64); err != nil || size <= end {
			return 0, 0, bad
		}
	}
	return start, size, nil
}

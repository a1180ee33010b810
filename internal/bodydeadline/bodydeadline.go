// Package bodydeadline bounds how long an HTTP request body may take to
// arrive, for the servers of package server and server/httpapi: net/http
// has no read deadline past the headers short of a ReadTimeout, which
// would also cut their long answers.
package bodydeadline

import (
	"io"
	"net/http"
	"time"
)

// Default is the bound the servers use unless told otherwise.
const Default = 30 * time.Second

// Wrap bounds how long a request body may take, so that a
// peer that trickles a body (or never ends a chunked one) cannot hold a
// connection and its goroutine forever: net/http has no read deadline
// past the headers without a ReadTimeout, and a ReadTimeout would cut the
// long answers (event stream, observe, update progress). Reading the body
// gets a deadline d from the start of the request; net/http's own discard
// of an unread body after an early answer (401, 415) meets the same
// deadline. An authenticated request's body (see Slide) may take longer,
// as long as some bytes arrive every d. At the end of the body the
// deadline is lifted, since net/http then reads the connection in the
// background to notice a client going away.
func Wrap(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if rc.SetReadDeadline(time.Now().Add(d)) == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, d: d}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody is a request body under Wrap.
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	d     time.Duration
	slide bool // each read that brings data moves the deadline on
	done  bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case b.done:
	case err == io.EOF:
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case n > 0 && b.slide:
		_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	}
	return n, err
}

// Slide lets an authenticated request's body take as long as
// it keeps sending: a package upload over a slow link.
func Slide(r *http.Request) {
	if b, ok := r.Body.(*deadlineBody); ok && !b.slide {
		b.slide = true
		_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	}
}

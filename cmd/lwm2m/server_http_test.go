package main

import (
	"net/http"
	"testing"
)

// A peer that makes one request and then keeps the connection open
// without another must not hold it forever: 500 such connections to the API
// were all still open 20 s later, twice ReadHeaderTimeout.
func TestAPIHTTPServerDeadlines(t *testing.T) {
	hs := apiHTTPServer(http.NotFoundHandler())
	if hs.ReadHeaderTimeout <= 0 {
		t.Errorf("ReadHeaderTimeout %v: a peer may send headers forever", hs.ReadHeaderTimeout)
	}
	if hs.IdleTimeout <= 0 && hs.ReadTimeout <= 0 {
		t.Errorf("IdleTimeout %v: a kept-alive connection may stay idle forever", hs.IdleTimeout)
	}
}

package server

import "testing"

// The image HTTP listener keeps no idle kept-alive connection forever
// either.
func TestImageHTTPServerIdleTimeout(t *testing.T) {
	s := startServer(t, &Server{HTTPAddr: "127.0.0.1:0"})
	if s.httpSrv == nil || s.httpSrv.IdleTimeout <= 0 {
		t.Fatal("the image HTTP server keeps an idle connection forever")
	}
}

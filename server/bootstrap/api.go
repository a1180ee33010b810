package bootstrap

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// HistoryHandler serves the bootstrap history as JSON, for
// httpapi.Config.Bootstrap, which puts it behind the API's
// authentication:
//
//	GET /api/bootstrap       every endpoint's latest attempt: []Summary
//	GET /api/bootstrap/{ep}  ep's attempts, oldest first: []Attempt (404 if none)
func (s *Server) HistoryHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		h := s.hist
		s.mu.Unlock()
		if h == nil {
			h = NewHistory() // not listening yet: nothing to show
		}
		ep := r.PathValue("ep")
		if ep == "" {
			ep = strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/api/bootstrap"), "/")
		}
		if ep == "" {
			writeJSON(w, http.StatusOK, h.Summaries())
			return
		}
		as := h.Endpoint(ep)
		if len(as) == 0 {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no bootstrap attempt of endpoint %q", ep)})
			return
		}
		writeJSON(w, http.StatusOK, as)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

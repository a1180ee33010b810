package campaign

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// Routes returns the engine's HTTP API (docs/SERVER.md, "Campaigns"),
// one method per route, for httpapi.Config.Routes: the server's API
// authenticates every request before it reaches them.
func (e *Engine) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /api/packages":              http.HandlerFunc(e.postPackage),
		"GET /api/packages":               http.HandlerFunc(e.getPackages),
		"POST /api/campaigns":             http.HandlerFunc(e.postCampaign),
		"GET /api/campaigns":              http.HandlerFunc(e.getCampaigns),
		"GET /api/campaigns/{id}":         http.HandlerFunc(e.getCampaign),
		"POST /api/campaigns/{id}/pause":  e.action(func(id string) (Campaign, error) { return e.Pause(id, "") }),
		"POST /api/campaigns/{id}/resume": e.action(e.Resume),
		"POST /api/campaigns/{id}/abort":  e.action(e.Abort),
	}
}

func (e *Engine) postPackage(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/octet-stream" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/octet-stream")
		return
	}
	max := e.maxPackageSize()
	if r.ContentLength > max {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("package of %d bytes is larger than the server's limit of %d bytes (-max-package-size)", r.ContentLength, max))
		return
	}
	// MaxBytesReader also closes the connection of a client that keeps
	// sending beyond the limit.
	body := http.MaxBytesReader(w, r.Body, max+1)
	p, err := e.AddPackage(r.URL.Query().Get("name"), body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = fmt.Errorf("%w: larger than the server's limit of %d bytes (-max-package-size)", ErrTooLarge, max)
		}
		httpError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, p)
}

func (e *Engine) getPackages(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, e.Packages())
}

func (e *Engine) postCampaign(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	var spec Spec
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return
	}
	c, err := e.Create(spec)
	if err != nil {
		httpError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

func (e *Engine) getCampaigns(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, e.Campaigns())
}

func (e *Engine) getCampaign(w http.ResponseWriter, r *http.Request) {
	c, err := e.Campaign(r.PathValue("id"))
	if err != nil {
		httpError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (e *Engine) action(f func(id string) (Campaign, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The body, if any, is ignored; reading it lets the connection
		// be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
		c, err := f(r.PathValue("id"))
		if err != nil {
			httpError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, c)
	})
}

// httpError maps the engine's errors to HTTP statuses.
func httpError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoPackage):
		status = http.StatusNotFound
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrEmptyPackage):
		status = http.StatusBadRequest
	case errors.Is(err, ErrState):
		status = http.StatusConflict
	case errors.Is(err, ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	}
	writeError(w, status, strings.TrimPrefix(err.Error(), "campaign: "))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/lwm2m-fota/lwm2m/server"
)

// StatusEntry is a registered device (as in /api/devices) with when its
// registration expires and its firmware status, an element of GET
// /api/status.
type StatusEntry struct {
	Device
	Expires time.Time           `json:"expires"`
	Status  server.DeviceStatus `json:"status"`
}

// DeviceStatus is the answer to GET /api/devices/{ep}/status.
type DeviceStatus struct {
	StatusEntry
	Registered bool                  `json:"is_registered"`
	History    []server.HistoryEntry `json:"history"`
}

func (a *api) apiStatus(reg server.Registration) StatusEntry {
	st, _ := a.s.DeviceStatus(reg.Endpoint)
	return StatusEntry{Device: a.deviceOf(reg), Expires: reg.Expires(), Status: st}
}

// statusList serves GET /api/status: every registered device with what
// the server knows of its firmware.
func (a *api) statusList(w http.ResponseWriter, r *http.Request) {
	regs := a.s.Registrations()
	out := make([]StatusEntry, 0, len(regs))
	for _, reg := range regs {
		out = append(out, a.apiStatus(reg))
	}
	writeJSON(w, http.StatusOK, out)
}

// deviceStatus serves GET /api/devices/{ep}/status: the device's
// registration (if it has one), firmware status and history. A device
// that has left still has its history.
func (a *api) deviceStatus(w http.ResponseWriter, r *http.Request) {
	ep := r.PathValue("ep")
	reg, registered := a.s.Registration(ep)
	_, seen := a.s.DeviceStatus(ep)
	if !registered && !seen {
		apiError(w, fmt.Errorf("%w: %q", server.ErrNotRegistered, ep))
		return
	}
	if !registered {
		reg = server.Registration{Endpoint: ep}
	}
	writeJSON(w, http.StatusOK, DeviceStatus{StatusEntry: a.apiStatus(reg), Registered: registered, History: a.s.History(ep)})
}

// maxEventStreams bounds the event streams open at once.
const maxEventStreams = 256

// sseHeartbeat is how often an idle event stream sends a comment, so that
// proxies keep it open and a browser that went away is noticed.
const sseHeartbeat = 25 * time.Second

// events serves GET /api/events, a Server-Sent Events stream (HTML Living
// Standard §9.2) of Event hints, one JSON object per "data:" line. It ends
// with the request; a browser that reads slowly loses events and gets a
// "resync" event instead, never slowing the server.
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// Each stream holds a connection, goroutines and a buffer: an API
	// client could otherwise open them without end.
	if a.streams.Add(1) > maxEventStreams {
		a.streams.Add(-1)
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many event streams open (%d): close some consoles", maxEventStreams))
		return
	}
	defer a.streams.Add(-1)
	// Subscribe delivers from a goroutine of its own and drops events
	// (for one "resync") while this one blocks: a slow browser never
	// slows the server.
	evs := make(chan server.Event)
	a.s.Subscribe(ctx, func(e server.Event) {
		select {
		case evs <- e:
		case <-ctx.Done():
		}
	})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// A retry hint, and a first line so that the browser's open event
	// fires at once.
	if _, err := fmt.Fprint(w, "retry: 2000\n: connected\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	beat := time.NewTicker(sseHeartbeat)
	defer beat.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case e := <-evs:
			b, _ := json.Marshal(e)
			_, err = fmt.Fprintf(w, "data: %s\n\n", b)
		case <-beat.C:
			_, err = fmt.Fprint(w, ": ping\n\n")
		}
		if err != nil || rc.Flush() != nil {
			return
		}
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// DeviceStatus is what the server last learned of a device's firmware:
// its version (/3/0/3) and the Firmware Update object's State and Update
// Result (/5/0/3, /5/0/5), from the reads Server.Inventory makes after a
// Register and from the notifications of the updates the server runs.
type DeviceStatus struct {
	Endpoint        string `json:"endpoint"`
	FirmwareVersion string `json:"firmware_version"` // "" until read
	// State and Result are fwobj.StateUnknown and fwobj.ResultUnknown
	// (-1) until known; StateName and ResultName are "" then.
	State      fwobj.State  `json:"state"`
	StateName  string       `json:"state_name"`
	Result     fwobj.Result `json:"result"`
	ResultName string       `json:"result_name"`
	// Phase is the running update's last phase (see Progress), "" when
	// none runs; Sent and Total count the bytes delivered so far.
	Phase   string    `json:"phase,omitempty"`
	Sent    int64     `json:"sent,omitempty"`
	Total   int64     `json:"total,omitempty"`
	Changed time.Time `json:"changed,omitzero"` // when any of the above last changed
}

// HistoryEntry is one event in a device's history.
type HistoryEntry struct {
	Time time.Time `json:"time"`
	// Event is registered, updated, deregistered, expired or firmware.
	Event  string `json:"event"`
	Detail string `json:"detail,omitempty"`
}

// historyLen bounds a device's history: the oldest entries go first.
const historyLen = 64

// inventoryReads bounds the devices whose inventory is read at once, so
// that a burst of registrations does not become a burst of requests.
const inventoryReads = 8

// devices keeps the status and history of each endpoint the server has
// seen, bounded in entries per device and in devices.
type devices struct {
	mu      sync.Mutex
	m       map[string]*deviceRecord
	sem     chan struct{}   // inventory reads running
	pending map[string]bool // endpoints with an inventory read started or waiting
}

type deviceRecord struct {
	st       DeviceStatus
	hist     []HistoryEntry // a ring of historyLen once full
	next     int            // where the ring writes next
	lastPct  int64          // the delivery percentage last published
	lastSeen time.Time
}

func (d *devices) getLocked(ep string) *deviceRecord {
	if d.m == nil {
		d.m = make(map[string]*deviceRecord)
	}
	r := d.m[ep]
	if r == nil {
		r = &deviceRecord{st: DeviceStatus{Endpoint: ep, State: fwobj.StateUnknown, Result: fwobj.ResultUnknown}, lastPct: -1}
		d.m[ep] = r
	}
	return r
}

func (r *deviceRecord) add(e HistoryEntry) {
	if len(r.hist) < historyLen {
		r.hist = append(r.hist, e)
		return
	}
	r.hist[r.next] = e
	r.next = (r.next + 1) % historyLen
}

func (r *deviceRecord) history() []HistoryEntry {
	out := make([]HistoryEntry, 0, len(r.hist))
	out = append(out, r.hist[r.next:]...)
	return append(out, r.hist[:r.next]...)
}

func (r *deviceRecord) status() DeviceStatus {
	st := r.st
	if st.State >= 0 {
		st.StateName = st.State.String()
	}
	if st.Result >= 0 {
		st.ResultName = st.Result.String()
	}
	return st
}

// deviceEvent records a registry event of ep in its history and publishes
// it; a Register also starts the inventory read.
func (s *Server) deviceEvent(ep, event, detail string) {
	now := s.clock()
	s.devs.mu.Lock()
	r := s.devs.getLocked(ep)
	r.add(HistoryEntry{Time: now, Event: event, Detail: detail})
	r.lastSeen = now
	if event == "registered" {
		// A Register is a (re)start: what was known of /5 may be
		// stale, and a running update reports again.
		r.st.Phase, r.st.Sent, r.st.Total = "", 0, 0
	}
	s.pruneDevicesLocked()
	s.devs.mu.Unlock()
	s.events.publish(Event{Kind: "device", Endpoint: ep, Change: event})
	if event == "registered" {
		s.startInventory(ep)
	}
}

// pruneDevicesLocked forgets the devices that are no longer registered,
// least recently seen first, once there are more than twice
// MaxRegistrations records.
func (s *Server) pruneDevicesLocked() {
	limit := 2 * s.maxRegistrations()
	if len(s.devs.m) <= limit {
		return
	}
	s.mu.Lock()
	byEP := make(map[string]bool, len(s.byEP))
	for ep := range s.byEP {
		byEP[ep] = true
	}
	s.mu.Unlock()
	for len(s.devs.m) > limit {
		oldest, when := "", time.Time{}
		for ep, r := range s.devs.m {
			if !byEP[ep] && (oldest == "" || r.lastSeen.Before(when)) {
				oldest, when = ep, r.lastSeen
			}
		}
		if oldest == "" {
			return
		}
		delete(s.devs.m, oldest)
	}
}

// startInventory reads ep's inventory in the background when Inventory
// is on. Reads of one endpoint do not pile up (one runs or waits at a
// time), and no more endpoints wait than MaxRegistrations: a burst of
// registrations, or a peer that registers names in a loop, costs bounded
// goroutines and requests.
func (s *Server) startInventory(ep string) {
	if !s.Inventory {
		return
	}
	s.devs.mu.Lock()
	if s.devs.sem == nil {
		s.devs.sem = make(chan struct{}, inventoryReads)
		s.devs.pending = make(map[string]bool)
	}
	if s.devs.pending[ep] || len(s.devs.pending) >= s.maxRegistrations() {
		s.devs.mu.Unlock()
		return
	}
	s.devs.pending[ep] = true
	sem := s.devs.sem
	s.devs.mu.Unlock()
	go func() {
		sem <- struct{}{}
		s.devs.mu.Lock()
		delete(s.devs.pending, ep) // a Register from now on reads again
		s.devs.mu.Unlock()
		defer func() { <-sem }()
		s.readInventory(ep)
	}()
}

// readInventory reads ep's firmware version, State and Update Result. A
// device without the resource, or one that does not answer, keeps what
// was known.
func (s *Server) readInventory(ep string) {
	answered := true
	read := func(p model.Path) (string, bool) {
		if !answered {
			return "", false
		}
		ctx, cancel := s.withTimeout(context.Background())
		defer cancel()
		c, err := s.Read(ctx, ep, p, content.TextPlain)
		var ce *CodeError
		if err != nil {
			// A CoAP error (no such resource) is an answer; silence,
			// or a device that left, ends the reads.
			answered = errors.As(err, &ce)
			s.logger().Debug("inventory read failed", "ep", ep, "path", p, "err", err)
			return "", false
		}
		if c.Format != content.TextPlain {
			recs, err := c.Records(p)
			if err != nil || len(recs) != 1 {
				return "", false
			}
			return recs[0].Value.String(), true
		}
		return strings.TrimSpace(string(c.Payload)), true
	}
	version, vok := read(model.NewPath(3, 0, 3))
	state, sok := read(pathState)
	result, rok := read(pathResult)
	if !vok && !sok && !rok {
		return
	}

	s.devs.mu.Lock()
	r := s.devs.getLocked(ep)
	if vok {
		r.st.FirmwareVersion = version
	}
	var n int
	if sok && scanInt(state, &n) {
		r.st.State = fwobj.State(n)
	}
	if rok && scanInt(result, &n) {
		r.st.Result = fwobj.Result(n)
	}
	r.st.Changed = s.clock()
	s.devs.mu.Unlock()
	s.events.publish(Event{Kind: "device", Endpoint: ep, Change: "inventory"})
}

func scanInt(s string, n *int) bool {
	_, err := fmt.Sscan(s, n)
	return err == nil
}

// noteProgress keeps a running update's progress in the device's status
// and history, and publishes it: every change of phase, State or
// Result, and deliveries at most once per percent.
func (s *Server) noteProgress(p Progress) {
	s.devs.mu.Lock()
	r := s.devs.getLocked(p.Endpoint)
	publish := true
	switch p.Phase {
	case "deliver":
		r.st.Sent, r.st.Total = p.Sent, p.Total
		pct := int64(0)
		if p.Total > 0 {
			pct = 100 * p.Sent / p.Total
		}
		publish = pct != r.lastPct || r.st.Phase != "deliver"
		r.lastPct = pct
	default:
		detail := p.Phase
		if p.State >= 0 {
			r.st.State = p.State
			detail += ", State " + p.State.String()
		}
		if p.Result >= 0 {
			r.st.Result = p.Result
			detail += ", Result " + p.Result.String()
		}
		if p.URI != "" {
			detail += ", " + p.URI
		}
		r.add(HistoryEntry{Time: s.clock(), Event: "firmware", Detail: detail})
	}
	r.st.Phase = p.Phase
	if p.Phase == "done" {
		r.st.Phase, r.st.Sent, r.st.Total = "", 0, 0
	}
	r.st.Changed = s.clock()
	s.devs.mu.Unlock()
	if publish {
		s.events.publish(Event{Kind: "device", Endpoint: p.Endpoint, Change: "firmware"})
	}
	if p.Phase == "done" {
		// State and Update Result are separate resources: the outcome
		// may be known before the State that goes with it, and the
		// update's observations end here. Read both again.
		s.startInventory(p.Endpoint)
	}
}

// DeviceStatus returns what the server knows of ep's firmware, and
// false if it has seen no such device.
func (s *Server) DeviceStatus(ep string) (DeviceStatus, bool) {
	s.devs.mu.Lock()
	defer s.devs.mu.Unlock()
	r, ok := s.devs.m[ep]
	if !ok {
		return DeviceStatus{Endpoint: ep, State: fwobj.StateUnknown, Result: fwobj.ResultUnknown}, false
	}
	return r.status(), true
}

// History returns ep's recent registry and firmware events, oldest
// first: at most the last 64.
func (s *Server) History(ep string) []HistoryEntry {
	s.devs.mu.Lock()
	defer s.devs.mu.Unlock()
	r, ok := s.devs.m[ep]
	if !ok {
		return []HistoryEntry{}
	}
	return r.history()
}

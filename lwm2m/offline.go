package lwm2m

import (
	"context"
	"errors"
	"sync"
)

// ErrOffline is returned by Send while the client is offline.
var ErrOffline = errors.New("lwm2m: client is offline")

// Pauser is implemented by objects that use the network on their own, as
// the Firmware Update object does for a pull download: EnterOffline calls
// Suspend (stop, keeping what was done so far) and ExitOffline calls
// Reconnect (go on where it stopped). The client finds it by type
// assertion on the objects it serves.
type Pauser interface {
	Suspend()
	Reconnect()
}

// offlineState is the client's offline switch. enter is closed while
// the client is offline, online while it is not; each is replaced when
// the switch turns the other way.
type offlineState struct {
	mu      sync.Mutex
	on      bool
	enter   chan struct{}
	online  chan struct{}
	pausing sync.Mutex // orders the Suspend and Reconnect calls
}

func (o *offlineState) init() {
	o.enter = make(chan struct{})
	o.online = make(chan struct{})
	close(o.online)
}

// EnterOffline takes the client off the network, as a device does
// before it switches its radio off: every session closes its socket
// (phase "offline"), and objects that implement Pauser pause their own
// transfers (a pull download of Firmware Update keeps State Downloading
// and the bytes it has). Notifications that become due meanwhile are
// held, the last value of each observed path, when the server's
// Notification Storing (/1/x/6) is true, and dropped when it is false;
// Send fails with ErrOffline. ExitOffline undoes it. Calling it again
// while offline does nothing. Safe from any goroutine.
func (c *Client) EnterOffline() {
	o := &c.off
	o.pausing.Lock()
	defer o.pausing.Unlock()
	o.mu.Lock()
	if o.on {
		o.mu.Unlock()
		return
	}
	o.on = true
	close(o.enter)
	o.online = make(chan struct{})
	o.mu.Unlock()
	c.log.Info("entering offline mode")
	for _, p := range c.pausers() {
		p.Suspend()
	}
}

// ExitOffline brings the client back: each session opens a new socket,
// sends a Registration Update (or registers again if the server forgot
// it, or its lifetime passed) and then the notifications that were held,
// in the order they became due; paused transfers go on where they
// stopped. Calling it while online does nothing. Safe from any goroutine.
func (c *Client) ExitOffline() {
	o := &c.off
	o.pausing.Lock()
	defer o.pausing.Unlock()
	o.mu.Lock()
	if !o.on {
		o.mu.Unlock()
		return
	}
	o.on = false
	close(o.online)
	o.enter = make(chan struct{})
	o.mu.Unlock()
	c.log.Info("leaving offline mode")
	for _, p := range c.pausers() {
		p.Reconnect()
	}
}

// Offline reports whether the client is offline (EnterOffline).
func (c *Client) Offline() bool { return c.isOffline() }

func (c *Client) isOffline() bool {
	c.off.mu.Lock()
	defer c.off.mu.Unlock()
	return c.off.on
}

// offlineC is closed once the client is offline.
func (c *Client) offlineC() <-chan struct{} {
	c.off.mu.Lock()
	defer c.off.mu.Unlock()
	return c.off.enter
}

// onlineC is closed once the client is online.
func (c *Client) onlineC() <-chan struct{} {
	c.off.mu.Lock()
	defer c.off.mu.Unlock()
	return c.off.online
}

// waitOnline holds a session that is not registered while the client is
// offline: it must not dial or register with the radio off.
func (s *session) waitOnline(ctx context.Context) error {
	if !s.c.isOffline() {
		return nil
	}
	s.setPhase(phaseOffline)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.c.onlineC():
		return nil
	}
}

func (c *Client) pausers() []Pauser {
	var out []Pauser
	for _, id := range c.objectIDs() {
		if o, ok := c.object(id); ok {
			if p, ok := o.(Pauser); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

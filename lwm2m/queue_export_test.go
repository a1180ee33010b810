package lwm2m

// Held returns how many messages wait in the sessions' gates for the
// client to wake or come back online (queue.go).
func Held(c *Client) int {
	n := 0
	for _, s := range c.currentSessions() {
		s.gate.mu.Lock()
		n += len(s.gate.waiters)
		s.gate.mu.Unlock()
	}
	return n
}

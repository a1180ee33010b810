//go:build race

package lwm2m

import "sync/atomic"

// ioSync tells the race detector what the socket guarantees: whatever a
// goroutine did before it sent a datagram happens before what another
// does after reading the answer (go-coap releases a request's pooled
// message when the answer comes). The syscall package's Read and Write
// say so to the detector; udpsock's raw system calls do not.
type ioSync struct{ seq atomic.Uint64 }

func (s *ioSync) sent()     { s.seq.Add(1) }
func (s *ioSync) received() { s.seq.Load() }

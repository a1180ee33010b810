package server

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// BenchmarkSendSender is the registry's part of a Send from an address
// no device registered from (a flood), with 10,000 registrations: the
// lookup runs under the registry's lock, which every Register, Update
// and request takes too.
func BenchmarkSendSender(b *testing.B) {
	s := &Server{Store: &MemoryStore{}, MaxRegistrations: 20000, Logger: slog.New(slog.DiscardHandler)}
	s.regs, s.byEP = map[string]*Registration{}, map[string]string{}
	for i := range 10000 {
		from := peer{addr: fmt.Sprintf("10.0.%d.%d:5683", i/250, i%250)}
		if _, code := s.register(map[string]string{"ep": fmt.Sprintf("dev-%05d", i), "lt": "3600"}, "</5/0>", from); code != 0 && code != codes.Created {
			b.Fatalf("register %d: %v", i, code)
		}
	}
	stranger := peer{addr: "192.0.2.1:5683"}
	b.ResetTimer()
	for b.Loop() {
		if _, code := s.sender(stranger); code != codes.NotFound {
			b.Fatalf("a stranger's Send: %v", code)
		}
	}
}

package lossy_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lossy"
)

func ExampleNew() {
	// A server that answers "pong".
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 100)
		for {
			_, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			srv.WriteToUDP([]byte("pong"), from)
		}
	}()

	// Put a proxy in front of it that loses everything, then nothing.
	p, err := lossy.New(context.Background(), srv.LocalAddr().(*net.UDPAddr), lossy.Config{Loss: 1, Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	c, err := net.DialUDP("udp", nil, p.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	c.Write([]byte("ping")) // lost
	for p.Stats().Up.Received == 0 {
		time.Sleep(time.Millisecond) // let the proxy read it before the change
	}
	p.SetConfig(lossy.Config{})
	c.Write([]byte("ping"))
	buf := make([]byte, 100)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	s := p.Stats()
	fmt.Printf("%s: %d sent up, %d dropped\n", buf[:n], s.Up.Received, s.Up.Dropped)
	// Output: pong: 2 sent up, 1 dropped
}

//go:build !linux

package download

import (
	"context"
	"fmt"
	"net"
	"time"
)

func dialUDP(ctx context.Context, hostport string, _ time.Duration) (datagramConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", hostport)
	if err != nil {
		return nil, transient(fmt.Errorf("download: dial %s: %w", hostport, err))
	}
	return &netDatagram{conn: conn}, nil
}

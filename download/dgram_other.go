//go:build !linux

package download

import (
	"net"
	"time"
)

func newUDPDatagram(conn *net.UDPConn, _ time.Duration) (datagramConn, error) {
	return &netDatagram{conn: conn}, nil
}

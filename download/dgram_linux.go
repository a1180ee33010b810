package download

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// udpDatagram is a connected UDP socket that Go's netpoller never sees: it
// is read with blocking read(2) calls. Stop-and-wait spends its life
// waiting for one datagram, and with the netpoller every block costs an
// epoll_wait, a failed first read, a goroutine park and wake-up, and a
// wake-up of an idle thread sleeping in epoll_wait on the other core, the
// one the server needs. SO_RCVTIMEO wakes the read every tick so that
// deadlines are honoured, and shutdown(2) wakes it at once on interrupt.
type udpDatagram struct {
	fd   int
	mu   sync.Mutex // guards fd against close racing with interrupt
	done bool
}

// dialUDP resolves the host of hostport and connects a blocking UDP socket to it.
func dialUDP(ctx context.Context, hostport string, tick time.Duration) (datagramConn, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidURI, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%w: port %q", ErrInvalidURI, portStr)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return nil, transient(fmt.Errorf("download: resolve %s: %w", host, err))
	}
	ip := ips[0].Unmap()
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if ip.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(port), Addr: ip.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(port), Addr: ip.As16(), ZoneId: zoneID(ip)}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return nil, transient(fmt.Errorf("download: socket: %w", err))
	}
	tv := syscall.NsecToTimeval(tick.Nanoseconds())
	if err = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err == nil {
		err = syscall.Connect(fd, sa)
	}
	if err != nil {
		syscall.Close(fd)
		return nil, transient(fmt.Errorf("download: dial %s: %w", hostport, err))
	}
	return &udpDatagram{fd: fd}, nil
}

func zoneID(ip netip.Addr) uint32 {
	if z := ip.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			return uint32(ifi.Index)
		}
	}
	return 0
}

// send and recv are ordinary blocking system calls: the scheduler knows
// the thread may block and hands its P to other goroutines meanwhile. Raw
// system calls would keep the P for the whole round trip, which starves
// every other goroutine of the process — an in-process server, or the
// other downloads of a gateway — until a preemption signal breaks the read.
// The read blocks at most one tick (SO_RCVTIMEO), so deadlines hold.
func (u *udpDatagram) send(b []byte) error {
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_WRITE, uintptr(u.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return os.NewSyscallError("write", errno)
		}
	}
}

func (u *udpDatagram) recv(b []byte, deadline time.Time) (int, error) {
	for {
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(u.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), 0, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			yield() // let a pending preemption happen
		case syscall.EAGAIN:
			yield()
			if !time.Now().Before(deadline) {
				return 0, os.ErrDeadlineExceeded
			}
		default:
			return 0, os.NewSyscallError("read", errno)
		}
	}
}

// yield is a function call the compiler keeps, so that its prologue
// checks for a preemption request.
//
//go:noinline
func yield() {}

// interrupt wakes a blocked recv: after shutdown(2) reads return 0 at once.
func (u *udpDatagram) interrupt() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.done {
		syscall.Shutdown(u.fd, syscall.SHUT_RDWR)
	}
}

// close must only be called by the goroutine that reads, once it has stopped.
func (u *udpDatagram) close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return nil
	}
	u.done = true
	return syscall.Close(u.fd)
}

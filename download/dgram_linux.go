package download

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// udpDatagram reads a connected UDP socket with blocking read(2) calls
// instead of Go's netpoller. Stop-and-wait spends its life waiting for one
// datagram; a blocking read saves the epoll_wait, the failed first read
// and the goroutine park and wake-up around every block. SO_RCVTIMEO wakes
// the read every tick so that deadlines are honoured, and shutdown(2)
// wakes it at once on close.
type udpDatagram struct {
	conn *net.UDPConn
	rc   syscall.RawConn

	// Arguments and results of the raw callbacks live here so that the
	// method values below are made once, not once per datagram.
	rbuf, wbuf   []byte
	rn           int
	rerr, werr   error
	readFn, wrFn func(fd uintptr) bool
	shutFn       func(fd uintptr)
}

func newUDPDatagram(conn *net.UDPConn, tick time.Duration) (datagramConn, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("download: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		tv := syscall.NsecToTimeval(tick.Nanoseconds())
		if serr = syscall.SetsockoptTimeval(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); serr != nil {
			return
		}
		serr = syscall.SetNonblock(int(fd), false)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("download: blocking socket: %w", err)
	}
	u := &udpDatagram{conn: conn, rc: rc}
	u.readFn, u.wrFn, u.shutFn = u.doRead, u.doWrite, u.doShutdown
	return u, nil
}

// doRead and doWrite use raw system calls, which do not tell the scheduler
// that the thread may block: with a normal one, the scheduler hands the P
// to another thread (which wakes up only to sleep in epoll_wait) whenever a
// round trip takes over 20µs, that is, on nearly every block. The read
// blocks at most one tick, and a preemption signal interrupts it with
// EINTR (SO_RCVTIMEO turns off SA_RESTART), so the goroutine still stops
// for the GC and the scheduler at the next function call.
func (u *udpDatagram) doRead(fd uintptr) bool {
	var p unsafe.Pointer
	if len(u.rbuf) > 0 {
		p = unsafe.Pointer(&u.rbuf[0])
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(p), uintptr(len(u.rbuf)))
	u.rn, u.rerr = int(n), nil
	if errno != 0 {
		u.rn, u.rerr = 0, errno
	}
	return true
}

func (u *udpDatagram) doWrite(fd uintptr) bool {
	var p unsafe.Pointer
	if len(u.wbuf) > 0 {
		p = unsafe.Pointer(&u.wbuf[0])
	}
	_, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(p), uintptr(len(u.wbuf)))
	u.werr = nil
	if errno != 0 {
		u.werr = errno
	}
	return true
}

func (u *udpDatagram) doShutdown(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RDWR) }

func (u *udpDatagram) send(b []byte) error {
	u.wbuf = b
	defer func() { u.wbuf = nil }()
	for {
		if err := u.rc.Write(u.wrFn); err != nil {
			return err
		}
		if u.werr != syscall.EINTR {
			break
		}
	}
	if u.werr != nil {
		return os.NewSyscallError("write", u.werr)
	}
	return nil
}

func (u *udpDatagram) recv(b []byte, deadline time.Time) (int, error) {
	u.rbuf = b
	defer func() { u.rbuf = nil }()
	for {
		if err := u.rc.Read(u.readFn); err != nil {
			return 0, err
		}
		switch {
		case u.rerr == nil:
			return u.rn, nil
		case u.rerr == syscall.EINTR:
			// Back in Go code, so that a pending preemption happens.
		case u.rerr != syscall.EAGAIN:
			return 0, os.NewSyscallError("read", u.rerr)
		case !time.Now().Before(deadline):
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (u *udpDatagram) close() error {
	u.rc.Control(u.shutFn)
	return u.conn.Close()
}

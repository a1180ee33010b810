package udpsock

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Conn is a connected UDP socket. Write may be called from any goroutine;
// Read from one goroutine at a time.
type Conn struct {
	fd     int
	tick   time.Duration
	local  netip.AddrPort
	remote netip.AddrPort

	// idle is a duplicate of fd registered with the netpoller, for
	// ReadIdle; nil while reads block (see ReadIdle).
	idle        *os.File
	misses      int   // reads in a row that spun in vain; see spinFor
	noSpin      bool  // reads never spin (see NewPacketConn)
	maxSpinners int32 // GOMAXPROCS/2 when dialled
	interrupted atomic.Bool

	mu   sync.Mutex // guards fd against Close racing with Interrupt
	done bool
}

// Dial connects a new socket to raddr. With a valid laddr the socket is
// first bound to it with SO_REUSEADDR and SO_REUSEPORT, so that it can
// share the port of a listener that set them too (see ReusePort): Linux
// then delivers raddr's datagrams to the connected socket, which scores
// above an unconnected one. tick is how often a read wakes to look at its
// deadline.
func Dial(laddr, raddr netip.AddrPort, tick time.Duration) (*Conn, error) {
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	family := syscall.AF_INET
	if raddr.Addr().Is6() {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// GOMAXPROCS is read once: the runtime takes its scheduler lock to
	// answer, which a read of every block should not.
	c := &Conn{fd: fd, tick: tick, remote: raddr, maxSpinners: int32(runtime.GOMAXPROCS(0) / 2)}
	if err := c.setup(family, laddr); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return c, nil
}

func (c *Conn) setup(family int, laddr netip.AddrPort) error {
	tv := syscall.NsecToTimeval(c.tick.Nanoseconds())
	if err := syscall.SetsockoptTimeval(c.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	if laddr.IsValid() {
		if err := reusePort(c.fd); err != nil {
			return err
		}
		if err := syscall.Bind(c.fd, sockaddr(family, laddr)); err != nil {
			return os.NewSyscallError("bind", err)
		}
	}
	if err := syscall.Connect(c.fd, sockaddr(family, c.remote)); err != nil {
		return os.NewSyscallError("connect", err)
	}
	sa, err := syscall.Getsockname(c.fd)
	if err != nil {
		return os.NewSyscallError("getsockname", err)
	}
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		c.local = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		c.local = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return nil
}

func sockaddr(family int, ap netip.AddrPort) syscall.Sockaddr {
	ip := ap.Addr()
	if family == syscall.AF_INET {
		return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ip.Unmap().As4()}
	}
	return &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16(), ZoneId: zoneID(ip)}
}

func zoneID(ip netip.Addr) uint32 {
	if z := ip.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			return uint32(ifi.Index)
		}
	}
	return 0
}

func reusePort(fd int) error {
	for _, opt := range []int{syscall.SO_REUSEADDR, 0xf /* SO_REUSEPORT */} {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, 1); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	return nil
}

// ReusePort is a net.ListenConfig Control function that lets a listener
// share its port with sockets from Dial that are connected to one peer.
func ReusePort(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = reusePort(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}

// LocalAddr is the address the socket is bound to.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// RemoteAddr is the peer the socket is connected to.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// Write sends one datagram. It is an ordinary system call: the scheduler
// may hand the goroutine's P to others while a full send buffer blocks it.
func (c *Conn) Write(b []byte) error {
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_WRITE, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			// Non-blocking while in ReadIdle, and the send buffer is full.
			waitWritable(c.fd)
		default:
			return os.NewSyscallError("write", errno)
		}
	}
}

// Read reads one datagram into b. It returns an error wrapping
// os.ErrDeadlineExceeded once deadline has passed with nothing read, and
// 0 bytes after Interrupt. An ICMP error for an earlier datagram comes
// back as an error too (ECONNREFUSED).
//
// The read first polls for a short while (see spinFor), then blocks in an
// ordinary system call: when a round trip takes longer than 20 µs sysmon
// hands the goroutine's P to other goroutines. A raw blocking call would
// keep the P for the whole round trip and starve the rest of the process
// (an in-process server, the other downloads of a gateway). SO_RCVTIMEO
// wakes the read every tick so the deadline holds.
func (c *Conn) Read(b []byte, deadline time.Time) (int, error) {
	return c.read(b, deadline, nil)
}

// ReadFrom is Read that also returns the sender. A connected socket only
// receives from its peer, except for what was queued before it was
// connected: a socket that shares a listener's port (Dial with laddr) may
// hold another peer's datagram from that moment.
func (c *Conn) ReadFrom(b []byte, deadline time.Time) (int, netip.AddrPort, error) {
	var rsa syscall.RawSockaddrAny
	n, err := c.read(b, deadline, &rsa)
	if err != nil || n == 0 {
		return n, netip.AddrPort{}, err
	}
	return n, addrPort(&rsa), nil
}

func (c *Conn) read(b []byte, deadline time.Time, rsa *syscall.RawSockaddrAny) (int, error) {
	if err := c.leaveIdle(); err != nil {
		return 0, err
	}
	var l uint32 // value-result length of *rsa, reset before each call
	var lp *uint32
	if rsa != nil {
		lp = &l
	}
	// rsa and l may live on this goroutine's stack, which moves when it
	// grows: convert their addresses to uintptr only in the system call's
	// argument list, where the compiler keeps them valid (unsafe.Pointer
	// rule 4). A uintptr taken earlier pointed into the old stack, and
	// the sender came back empty.
	// Spin first: see spinFor.
	switch {
	case c.noSpin:
	case c.misses >= spinMisses:
		if c.misses++; c.misses >= spinMisses+spinPause {
			c.misses = 0 // look again whether the peer has come near
		}
	case startSpin(c.maxSpinners):
		t0 := time.Now()
		for {
			l = syscall.SizeofSockaddrAny
			n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), syscall.MSG_DONTWAIT, uintptr(unsafe.Pointer(rsa)), uintptr(unsafe.Pointer(lp)))
			if errno == 0 {
				spinners.Add(-1)
				c.misses = 0
				return int(n), nil
			}
			if errno != syscall.EAGAIN && errno != syscall.EINTR {
				spinners.Add(-1)
				return 0, os.NewSyscallError("recvfrom", errno)
			}
			if time.Since(t0) > spinFor {
				break
			}
		}
		spinners.Add(-1)
		c.misses++
	}
	for {
		l = syscall.SizeofSockaddrAny
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), 0, uintptr(unsafe.Pointer(rsa)), uintptr(unsafe.Pointer(lp)))
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
			return 0, os.NewSyscallError("recvfrom", errno)
		}
	}
}

// A read first polls the socket without blocking, for up to spinFor,
// before it blocks. On loopback or a LAN the answer to a block often comes
// within that time, and then the read returns without the sleep and
// wake-up of a blocking call, the largest part of a stop-and-wait round
// trip on a virtual machine (16 MiB from coap-server-notls, alternating
// runs: 0.51–0.58 s with a 128 µs spin, 0.54–0.58 s with 64 µs, 0.87–0.96 s
// without). The spin keeps the P, like a goroutine that
// computes for as long, and it is adaptive: after spinMisses reads in a
// row whose datagram did not come in time (a peer farther away, or one
// that a busy process answers late) reads stop spinning for spinPause
// reads, then try again.
//
// Like the runtime's own spinning threads, at most half of GOMAXPROCS
// reads spin at once, so that the rest of the process always has Ps: with
// a server and its device in one process on two cores, both ends spinning
// took every P, and a push ran at a third of its speed.
const (
	spinFor    = 128 * time.Microsecond
	spinMisses = 4
	spinPause  = 64
)

// spinners counts the reads of the process that spin now. Like
// GOMAXPROCS, the budget it guards is the process's.
var spinners atomic.Int32

// startSpin takes a place among the spinners if fewer than max spin.
func startSpin(max int32) bool {
	if n := spinners.Add(1); n > max {
		spinners.Add(-1)
		return false
	}
	return true
}

// addrPort decodes a sockaddr_in or sockaddr_in6 without allocating.
func addrPort(rsa *syscall.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// ReadIdle reads one datagram, waiting for it in Go's netpoller: no OS
// thread is held while nothing comes. It suits a connection that is idle
// most of the time (an LwM2M client between requests); Read suits one
// that waits for answer after answer. Interrupt wakes it (0 bytes). The
// first ReadIdle after a Read, and the first Read after a ReadIdle, cost
// a few system calls to switch the socket's mode.
func (c *Conn) ReadIdle(b []byte) (int, error) {
	return c.readIdle(b, syscall.MSG_DONTWAIT)
}

// PeekIdle waits for the next datagram as ReadIdle does and returns its
// size without taking it (MSG_PEEK|MSG_TRUNC), so that the caller can
// pick a buffer that holds it: an idle connection need not keep a buffer
// of the largest datagram it may receive. Interrupt wakes it (0 bytes).
func (c *Conn) PeekIdle() (int, error) {
	var b [1]byte
	return c.readIdle(b[:], syscall.MSG_DONTWAIT|syscall.MSG_PEEK|syscall.MSG_TRUNC)
}

func (c *Conn) readIdle(b []byte, flags int) (int, error) {
	if c.idle == nil {
		// The netpoller needs O_NONBLOCK, which the duplicate shares with
		// fd; Go's poller deregisters the duplicate when it is closed.
		fd, err := syscall.Dup(c.fd)
		if err != nil {
			return 0, os.NewSyscallError("dup", err)
		}
		syscall.CloseOnExec(fd)
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fd)
			return 0, os.NewSyscallError("fcntl", err)
		}
		c.idle = os.NewFile(uintptr(fd), "udp")
	}
	rc, err := c.idle.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n uintptr
	var errno syscall.Errno
	err = rc.Read(func(fd uintptr) bool {
		n, _, errno = syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags), 0, 0)
		if errno == syscall.EAGAIN && c.interrupted.Load() {
			// After shutdown(2) a non-blocking read still says EAGAIN.
			n, errno = 0, 0
		}
		return errno != syscall.EAGAIN && errno != syscall.EINTR
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("recvfrom", errno)
	}
	return int(n), nil
}

// leaveIdle makes reads block again after ReadIdle.
func (c *Conn) leaveIdle() error {
	if c.idle == nil {
		return nil
	}
	err := c.idle.Close()
	c.idle = nil
	if err != nil {
		return err
	}
	return os.NewSyscallError("fcntl", syscall.SetNonblock(c.fd, false))
}

// waitWritable waits up to a second for room in fd's send buffer.
func waitWritable(fd int) {
	pfd := [1]struct {
		fd      int32
		events  int16
		revents int16
	}{{fd: int32(fd), events: 0x4 /* POLLOUT */}}
	ts := syscall.NsecToTimespec(int64(time.Second))
	syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
}

// yield is a function call the compiler keeps, so that its prologue
// checks for a preemption request.
//
//go:noinline
func yield() {}

// Interrupt makes a pending or later Read return at once (0 bytes): after
// shutdown(2) a blocking read returns 0. It may be called from any
// goroutine, also after Close.
func (c *Conn) Interrupt() {
	c.interrupted.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
	}
}

// Close releases the socket. Only the goroutine that reads may call it,
// once it has stopped reading.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil
	}
	c.done = true
	if c.idle != nil {
		c.idle.Close()
	}
	return syscall.Close(c.fd)
}

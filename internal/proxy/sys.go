package proxy

import (
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loops' system calls. Every socket, pipe and epoll set they touch
// is non-blocking, so no call here blocks (but the epoll waits, which say so),
// and they go in as raw system calls: no hand-off of the loop's processor to
// the scheduler around each (what syscall.Syscall does for calls that may
// block), which also keeps the runtime's monitor thread from waking to take
// processors back. That hand-off cost as much as a quarter of the loop's time
// per connection. sysEpollWait and sysEpollBlock differ only in that
// (RawSyscall6 or Syscall6) and stay two: a pointer passed as uintptr is kept
// alive only in a direct call to the system call function.

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func sysRead(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sysWrite(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sysSend writes to a socket; a peer gone yields EPIPE, not SIGPIPE.
func sysSend(fd int, p []byte, flags int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)),
		uintptr(flags|unix.MSG_NOSIGNAL), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sysClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func sysShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errnoErr(e)
}

func sysSetInt(fd, level, opt, v int) error {
	val := int32(v)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&val)), 4, 0)
	return errnoErr(e)
}

// sysReset makes the next close of fd send a RST (SO_LINGER 0).
func sysReset(fd int) {
	l := unix.Linger{Onoff: 1, Linger: 0}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
}

func sysSplice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// sysEpollWait takes the ready events, waiting up to d for some. It holds
// the goroutine's processor while it waits (see evloop.run).
func sysEpollWait(epfd int, events []unix.EpollEvent, d time.Duration) (int, error) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT2, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// sysEpollBlock waits up to d (without end when d < 0) for events, as a
// blocking call: the scheduler gives the goroutine's processor to others
// meanwhile.
func sysEpollBlock(epfd int, events []unix.EpollEvent, d time.Duration) (int, error) {
	var tsp unsafe.Pointer
	ts := unix.NsecToTimespec(d.Nanoseconds())
	if d >= 0 {
		tsp = unsafe.Pointer(&ts)
	}
	n, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(epfd), uintptr(unsafe.Pointer(unsafe.SliceData(events))), uintptr(len(events)),
		uintptr(tsp), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func sysEpollCtl(epfd, op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	return errnoErr(e)
}

// sysAccept takes one connection off a listener, with its peer's address.
func sysAccept(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unsafe.Sizeof(rsa))
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), rawAddrPort(&rsa), nil
}

// sysLocalAddr is the local address of a socket.
func sysLocalAddr(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unsafe.Sizeof(rsa))
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return rawAddrPort(&rsa), nil
}

func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), netPort(sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), netPort(sa.Port))
	}
	return netip.AddrPort{}
}

// netPort reads a port kept in network byte order.
func netPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// rawSockaddr is a backend's address as connect(2) takes it.
type rawSockaddr struct {
	family int
	any    unix.RawSockaddrAny
	size   uintptr
}

func newRawSockaddr(ap netip.AddrPort) rawSockaddr {
	var r rawSockaddr
	port := [2]byte{byte(ap.Port() >> 8), byte(ap.Port())}
	if ap.Addr().Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.any))
		sa.Family, sa.Addr = unix.AF_INET, ap.Addr().As4()
		sa.Port = *(*uint16)(unsafe.Pointer(&port))
		r.family, r.size = unix.AF_INET, unsafe.Sizeof(*sa)
		return r
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&r.any))
	sa.Family, sa.Addr = unix.AF_INET6, ap.Addr().As16()
	sa.Port = *(*uint16)(unsafe.Pointer(&port))
	r.family, r.size = unix.AF_INET6, unsafe.Sizeof(*sa)
	return r
}

// sysDial opens a socket and starts its connect to sa.
func sysDial(sa *rawSockaddr) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(sa.family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	sysSetInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	_, _, e = unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa.any)), sa.size)
	if e != 0 && e != unix.EINPROGRESS {
		sysClose(int(fd))
		return -1, e
	}
	return int(fd), nil
}

package stress

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// AcceptQueue is how many connections wait in ln's accept queue: the
// kernel's count (TCP_INFO on a listening socket: tcpi_unacked, what `ss
// -lnt` shows as Recv-Q), read without touching the queue.
func AcceptQueue(ln net.Listener) (int, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return 0, errors.ErrUnsupported
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var serr error
	if err := rc.Control(func(fd uintptr) {
		info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return int(info.Unacked), nil
}

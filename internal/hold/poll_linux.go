package hold

import (
	"encoding/binary"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// poller is an epoll set of its own (not the runtime's) and an eventfd to
// interrupt its wait.
type poller struct {
	ep, ev int
	buf    []unix.EpollEvent
}

func newPoller() (poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return poller{}, os.NewSyscallError("epoll_create1", err)
	}
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return poller{}, os.NewSyscallError("eventfd", err)
	}
	// The eventfd's generation is 0, which no hold has (they start at 1).
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, ev, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ev)}); err != nil {
		unix.Close(ep)
		unix.Close(ev)
		return poller{}, os.NewSyscallError("epoll_ctl", err)
	}
	return poller{ep: ep, ev: ev, buf: make([]unix.EpollEvent, 256)}, nil
}

// add watches fd for readability once (EPOLLONESHOT: a client that goes
// on talking is reported one time only). EPOLLRDHUP and the always
// reported EPOLLHUP and EPOLLERR make a client that leaves readable too.
func (p *poller) add(fd int32, gen uint32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: fd, Pad: int32(gen)}
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// del stops watching fd. The runtime's own registration of the same
// socket is not touched, so the connection goes on working as a net.Conn.
func (p *poller) del(fd int32) {
	unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, int(fd), nil)
}

// wake makes a wait return now.
func (p *poller) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(p.ev, one[:])
}

// wait blocks up to ms milliseconds (-1: until an event) and appends the
// descriptors found readable to out. It blocks a thread, not only a
// goroutine: one thread for the whole holder.
func (p *poller) wait(out []event, ms int) []event {
	n, err := unix.EpollWait(p.ep, p.buf, ms)
	if err != nil {
		return out // EINTR: the caller computes the wait again
	}
	for _, e := range p.buf[:n] {
		if e.Fd == int32(p.ev) && e.Pad == 0 {
			var b [8]byte
			unix.Read(p.ev, b[:])
			continue
		}
		out = append(out, event{fd: e.Fd, gen: uint32(e.Pad)})
	}
	return out
}

func (p *poller) close() {
	unix.Close(p.ep)
	unix.Close(p.ev)
}

// Detach takes the socket out of tc and closes tc: what is left is the
// descriptor alone, without the runtime's poller entry or tc's own state
// (together about as much again as a held client costs otherwise). The
// caller owns the descriptor; Attach gives it back as a net.Conn.
func Detach(tc *net.TCPConn) (int, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	tc.Close() // the socket lives on in fd
	return fd, nil
}

// Attach makes a net.Conn of a descriptor Detach returned, and takes it
// over: on error too, fd is closed.
func Attach(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close() // FileConn works on a copy of its own
	return net.FileConn(f)
}

package hold

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller is an epoll set of its own, not the runtime's, which itself sits
// in the runtime's poller as a file: the holder's goroutine waits for it
// to turn readable (any held socket has an event) like any goroutine
// waits for a socket, parked, with no thread blocked in epoll_wait. A
// blocked thread would keep its P until the runtime's monitor took it
// back (up to 10 ms), and with one P (a server pinned to one core) nothing
// else would run meanwhile. The next deadline is the file's read deadline.
type poller struct {
	f   *os.File
	rc  syscall.RawConn
	buf []unix.EpollEvent
}

func newPoller() (poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return poller{}, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return poller{}, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(ep), "hold")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return poller{}, err
	}
	p := poller{f: f, rc: rc, buf: make([]unix.EpollEvent, 256)}
	// Without the runtime's poller, a deadline would not end a wait.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return poller{}, fmt.Errorf("hold: the epoll set is not pollable: %w", err)
	}
	return p, nil
}

// add watches fd for readability once (EPOLLONESHOT: a client that goes
// on talking is reported one time only). EPOLLRDHUP and the always
// reported EPOLLHUP and EPOLLERR make a client that leaves readable too.
func (p *poller) add(fd int32, gen uint32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: fd, Pad: int32(gen)}
	var err error
	if cerr := p.rc.Control(func(ep uintptr) { err = unix.EpollCtl(int(ep), unix.EPOLL_CTL_ADD, int(fd), &ev) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// del stops watching fd. The runtime's own registration of the same
// socket, if it has one, is not touched.
func (p *poller) del(fd int32) {
	p.rc.Control(func(ep uintptr) { unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, int(fd), nil) })
}

// setDeadline makes a wait return at t, or at once if t has passed; zero:
// no deadline.
func (p *poller) setDeadline(t time.Time) { p.f.SetReadDeadline(t) }

// wait returns when a held socket has an event or the deadline has come,
// and appends the sockets found readable to out.
func (p *poller) wait(out []event) []event {
	p.rc.Read(func(ep uintptr) bool {
		n, err := unix.EpollWait(int(ep), p.buf, 0)
		if err != nil || n == 0 {
			return false // nothing yet (EINTR too): wait for the set to turn readable
		}
		for _, e := range p.buf[:n] {
			out = append(out, event{fd: e.Fd, gen: uint32(e.Pad)})
		}
		return true
	})
	return out
}

func (p *poller) close() { p.f.Close() }

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

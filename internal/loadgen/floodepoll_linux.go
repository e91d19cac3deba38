package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// epollAvailable reports whether this build has the epoll engine.
const epollAvailable = true

// floodEpoll is the open loop's engine for floods faster than the net
// package's dialer keeps up with on one core: one goroutine that makes
// each connection with raw system calls (socket, bind, connect, read,
// close; the descriptors never meet Go's netpoller) and waits for all of
// them on an epoll set of its own. Go's dialer spent about 37 µs of the
// load core's time per connection at 10,000/s, this 30 µs; most of what
// is left is the kernel's: the loopback handshake, done on the connecting
// core for both ends, and the close. (Making these calls with RawSyscall,
// to spare the runtime's syscall bookkeeping, measured no better.)
//
// The schedule, the drop rule, the window and every count are the same as
// the net engine's; only the client's cost differs.
func floodEpoll(ctx context.Context, cfg *FloodConfig, sched schedule, start time.Time) (*FloodResult, error) {
	dst, err := resolveSockaddr(cfg.Addr)
	if err != nil {
		return nil, err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	defer unix.Close(epfd)
	e := &epollRun{
		cfg: cfg, epfd: epfd, dst: dst, conns: map[int]*epollConn{},
		t: newFloodTally(),
	}
	e.family = unix.AF_INET
	if _, ok := dst.(*unix.SockaddrInet6); ok {
		e.family = unix.AF_INET6
	}
	e.t.br = nil
	events := make([]unix.EpollEvent, 256)
	var (
		next    int64
		dropped int64
		window  time.Duration
		open    = true // the window: still starting connections
	)
	for {
		if open {
			// When ctx has ended, one last pass makes the starts due by
			// now (at its deadline, all of them), as the net engine does.
			ended := ctx.Err() != nil
			for due := sched.due(time.Since(start)); next < due; next++ {
				if len(e.conns) >= cfg.MaxOutstanding {
					dropped++
					continue
				}
				e.t.lag = append(e.t.lag, time.Since(start)-sched.at(next))
				e.begin()
			}
			if ended {
				open = false
				window = time.Since(start)
			}
		}
		if !open && len(e.conns) == 0 {
			break
		}
		// Sleep until the next start is due, the window ends, a reply
		// arrives or the oldest connection times out. epoll's clock is
		// in milliseconds: a start waits at most 1 ms and is then made
		// with the others due by then (a burst of rate/1000).
		wait := 100 * time.Millisecond
		if open {
			if next < sched.total {
				wait = min(wait, sched.at(next)-time.Since(start))
			} else if dl, ok := ctx.Deadline(); ok {
				wait = min(wait, time.Until(dl))
			}
		}
		if o := e.oldest(); o != nil {
			wait = min(wait, time.Until(o.began.Add(cfg.Timeout)))
		}
		msec := 0
		if wait > 0 {
			msec = int((wait + time.Millisecond - 1) / time.Millisecond)
		}
		n, err := unix.EpollWait(epfd, events, msec)
		if err != nil && !errors.Is(err, unix.EINTR) {
			e.closeAll()
			return nil, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:max(n, 0)] {
			if c := e.conns[int(ev.Fd)]; c != nil {
				e.ready(ctx, c, ev.Events)
			}
		}
		e.expire()
	}
	res := &FloodResult{
		Rate: cfg.Rate, Dropped: int(dropped), Window: window, Elapsed: time.Since(start),
		Attempts: e.t.attempts, RefusedInWindow: e.t.refusedInWindow,
		Replies: e.t.replies, Errors: e.t.errors,
		FirstReply: summarize(e.t.lat), StartLag: summarize(e.t.lag),
	}
	return res, nil
}

// epollRun is the engine's state: the connections open, by descriptor,
// and in the order they began (for timeouts, which are all the same
// length: the oldest is always first).
type epollRun struct {
	cfg    *FloodConfig
	epfd   int
	dst    unix.Sockaddr
	family int
	conns  map[int]*epollConn
	fifo   []*epollConn
	t      floodTally
}

type epollConn struct {
	fd    int
	began time.Time
	done  bool
	n     int
	buf   [512]byte
}

// begin makes one connection: a non-blocking socket bound to the next
// source address (IP_BIND_ADDRESS_NO_PORT, as the net engine), a connect
// under way, and the descriptor in the epoll set.
func (e *epollRun) begin() {
	e.t.attempts++
	c := &epollConn{fd: -1, began: time.Now()}
	fd, err := unix.Socket(e.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		e.t.errors[errKind(err)]++
		return
	}
	c.fd = fd
	if local := e.cfg.Bind.Next(); local != nil {
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, sockaddrOf(local)); err != nil {
			e.fail(c, err)
			return
		}
	}
	if err := unix.Connect(fd, e.dst); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		e.fail(c, err)
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		e.fail(c, err)
		return
	}
	e.conns[fd] = c
	e.fifo = append(e.fifo, c)
}

// ready reads what arrived on c: once a whole first reply is there, it is
// counted (and a greeting answered with QUIT) and the connection closed.
func (e *epollRun) ready(ctx context.Context, c *epollConn, events uint32) {
	for {
		n, err := unix.Read(c.fd, c.buf[c.n:])
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
					e.fail(c, sockError(c.fd))
				}
				return
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			e.fail(c, err)
			return
		}
		if n == 0 {
			e.fail(c, errEOF)
			return
		}
		c.n += n
		code, complete, err := firstReply(c.buf[:c.n])
		switch {
		case err != nil:
			e.fail(c, err)
			return
		case complete:
			e.t.lat = append(e.t.lat, time.Since(c.began))
			e.t.replies[strconv.Itoa(code)]++
			if code/100 == 2 {
				// A greeting deserves a goodbye; the reply does not matter.
				unix.Write(c.fd, []byte(quitLine))
			} else if ctx.Err() == nil {
				e.t.refusedInWindow++
			}
			e.close(c)
			return
		case c.n == len(c.buf):
			e.fail(c, errProtocol)
			return
		}
	}
}

// firstReply parses the SMTP reply at the start of b: its code once its
// last line is complete ("250-a\r\n250 b\r\n"), or that more is to come.
func firstReply(b []byte) (code int, complete bool, err error) {
	for len(b) > 0 {
		i := indexLF(b)
		if i < 0 {
			return 0, false, nil
		}
		line := b[:i]
		if len(line) < 3 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) {
			return 0, false, errProtocol
		}
		c := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		if code != 0 && c != code {
			return 0, false, errProtocol
		}
		code = c
		if len(line) == 3 || line[3] != '-' {
			return code, true, nil
		}
		b = b[i+1:]
	}
	return 0, false, nil
}

func indexLF(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// errEOF is a connection the server closed before its first reply.
var errEOF = errors.New("EOF")

// fail counts err as c's outcome and closes c.
func (e *epollRun) fail(c *epollConn, err error) {
	if errors.Is(err, errEOF) {
		e.t.errors["EOF"]++
	} else {
		e.t.errors[errKind(err)]++
	}
	if c.fd >= 0 {
		e.close(c)
	}
}

// close drops c with a reset (SO_LINGER 0), as the net engine does, and
// forgets it; the kernel takes it out of the epoll set as it closes.
func (e *epollRun) close(c *epollConn) {
	unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(c.fd)
	delete(e.conns, c.fd)
	c.done = true
}

// oldest returns the connection that began first and is still open.
func (e *epollRun) oldest() *epollConn {
	for len(e.fifo) > 0 && e.fifo[0].done {
		e.fifo[0] = nil
		e.fifo = e.fifo[1:]
	}
	if len(e.fifo) == 0 {
		return nil
	}
	return e.fifo[0]
}

// expire fails every connection older than the timeout, counted as the
// net engine counts a deadline passed.
func (e *epollRun) expire() {
	now := time.Now()
	for c := e.oldest(); c != nil && now.Sub(c.began) >= e.cfg.Timeout; c = e.oldest() {
		e.t.errors["timeout"]++
		e.close(c)
	}
}

// closeAll closes every connection still open (on an error of epoll's).
func (e *epollRun) closeAll() {
	for _, c := range e.conns {
		e.close(c)
	}
}

// sockError returns the pending error of a socket epoll flagged.
func sockError(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if v == 0 {
		return errEOF
	}
	return syscall.Errno(v)
}

// resolveSockaddr resolves host:port once, for every connection.
func resolveSockaddr(addr string) (unix.Sockaddr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	return sockaddrOf(ta), nil
}

func sockaddrOf(ta *net.TCPAddr) unix.Sockaddr {
	ap := ta.AddrPort()
	a := ap.Addr().Unmap()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa
}

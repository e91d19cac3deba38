package hold

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair is a loopback TCP connection: the server's side (held) and the
// client's.
func pair(t *testing.T, ln net.Listener) (srv *net.TCPConn, cli net.Conn) {
	t.Helper()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); s.Close() })
	return s.(*net.TCPConn), cli
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func start(t *testing.T) (*Holder, context.CancelFunc) {
	t.Helper()
	h := New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// Run has begun once a hold is taken: try one on a socket of our own.
	ln := listen(t)
	srv, _ := pair(t, ln)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		tk, err := h.Hold(srv, time.Now().Add(time.Hour), func(Result) {})
		if err == nil {
			h.End(tk)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("holder never ran: %v", err)
		}
	}
	return h, cancel
}

// result collects one done call, and fails the test on a second.
type result struct {
	t  *testing.T
	mu sync.Mutex
	r  []Result
	at time.Time
	ch chan Result
}

func newResult(t *testing.T) *result { return &result{t: t, ch: make(chan Result, 1)} }

func (r *result) done(x Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.r = append(r.r, x)
	if len(r.r) > 1 {
		r.t.Errorf("done called again: %v", r.r)
		return
	}
	r.at = time.Now()
	r.ch <- x
}

func (r *result) wait(t *testing.T) Result {
	t.Helper()
	select {
	case x := <-r.ch:
		return x
	case <-time.After(10 * time.Second):
		t.Fatal("hold never ended")
		return 0
	}
}

func TestElapsed(t *testing.T) {
	h, _ := start(t)
	srv, _ := pair(t, listen(t))
	r := newResult(t)
	begin := time.Now()
	until := begin.Add(80 * time.Millisecond)
	if _, err := h.Hold(srv, until, r.done); err != nil {
		t.Fatal(err)
	}
	if got := r.wait(t); got != Elapsed {
		t.Fatalf("result %v, want elapsed", got)
	}
	if r.at.Before(until) {
		t.Errorf("ended %v after the start, before its deadline (80ms)", r.at.Sub(begin))
	}
	if h.Len() != 0 {
		t.Errorf("Len %d after the hold ended", h.Len())
	}
	// The connection is the caller's again, and works.
	srv.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := srv.Write([]byte("220 hi\r\n")); err != nil {
		t.Fatal(err)
	}
}

func TestReadyKeepsWhatTheClientSent(t *testing.T) {
	h, _ := start(t)
	srv, cli := pair(t, listen(t))
	r := newResult(t)
	if _, err := h.Hold(srv, time.Now().Add(time.Minute), r.done); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write([]byte("EHLO early\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := r.wait(t); got != Ready {
		t.Fatalf("result %v, want ready", got)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := srv.Read(buf)
	if err != nil || string(buf[:n]) != "EHLO early\r\n" {
		t.Fatalf("read %q, %v after the hold; want what the client sent", buf[:n], err)
	}
}

func TestReadyWhenTheClientLeaves(t *testing.T) {
	h, _ := start(t)
	srv, cli := pair(t, listen(t))
	r := newResult(t)
	if _, err := h.Hold(srv, time.Now().Add(time.Minute), r.done); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	if got := r.wait(t); got != Ready {
		t.Fatalf("result %v, want ready", got)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the client left: %v, want EOF", err)
	}
}

func TestEnd(t *testing.T) {
	h, _ := start(t)
	srv, _ := pair(t, listen(t))
	r := newResult(t)
	tk, err := h.Hold(srv, time.Now().Add(time.Minute), r.done)
	if err != nil {
		t.Fatal(err)
	}
	h.End(tk)
	if got := r.wait(t); got != Ended {
		t.Fatalf("result %v, want ended", got)
	}
	h.End(tk) // over already: no second call (result fails the test on one)
	// The descriptor can be held again.
	r2 := newResult(t)
	if _, err := h.Hold(srv, time.Now().Add(20*time.Millisecond), r2.done); err != nil {
		t.Fatal(err)
	}
	if got := r2.wait(t); got != Elapsed {
		t.Fatalf("second hold: %v, want elapsed", got)
	}
}

func TestStopEndsEveryHold(t *testing.T) {
	h, cancel := start(t)
	ln := listen(t)
	var rs []*result
	for range 20 {
		srv, _ := pair(t, ln)
		r := newResult(t)
		if _, err := h.Hold(srv, time.Now().Add(time.Hour), r.done); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	cancel()
	for i, r := range rs {
		if got := r.wait(t); got != Ended {
			t.Errorf("hold %d: %v, want ended", i, got)
		}
	}
	srv, _ := pair(t, ln)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := h.Hold(srv, time.Now().Add(time.Hour), func(Result) { t.Error("done after the holder stopped") })
		if errors.Is(err, ErrNotRunning) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("Hold after stop: %v, want ErrNotRunning", err)
		}
		time.Sleep(5 * time.Millisecond) // Run may not have seen the cancel yet
	}
}

// TestMany holds connections with deadlines in a shuffled order, some of
// whose clients talk: each ends once, the right way, and none before its
// deadline.
func TestMany(t *testing.T) {
	h, _ := start(t)
	ln := listen(t)
	const n = 200
	type one struct {
		r     *result
		until time.Time
		talk  bool
		cli   net.Conn
	}
	all := make([]one, n)
	base := time.Now().Add(100 * time.Millisecond)
	for i := range all {
		srv, cli := pair(t, ln)
		// Deadlines spread over 300ms, added out of order.
		until := base.Add(time.Duration((i*7919)%n) * 1500 * time.Microsecond)
		all[i] = one{r: newResult(t), until: until, talk: i%5 == 0, cli: cli}
		if _, err := h.Hold(srv, until, all[i].r.done); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range all {
		if o.talk {
			o.cli.Write([]byte("x"))
		}
	}
	for i, o := range all {
		got := o.r.wait(t)
		switch {
		case o.talk && got != Ready && got != Elapsed:
			t.Errorf("%d: %v, want ready", i, got)
		case !o.talk && got != Elapsed:
			t.Errorf("%d: %v, want elapsed", i, got)
		case got == Elapsed && o.r.at.Before(o.until):
			t.Errorf("%d: elapsed %v early", i, o.until.Sub(o.r.at))
		}
	}
	if h.Len() != 0 {
		t.Errorf("Len %d at the end", h.Len())
	}
}

// noFD is a connection without a descriptor: Hold refuses it, so the
// caller waits the old way.
type noFD struct{}

func (noFD) SyscallConn() (syscall.RawConn, error) { return nil, errors.New("no descriptor") }

func TestHoldBeforeRun(t *testing.T) {
	srv, _ := pair(t, listen(t))
	if _, err := New().Hold(srv, time.Now().Add(time.Second), func(Result) { t.Error("done called") }); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Hold before Run: %v, want ErrNotRunning", err)
	}
}

func TestHoldWithoutDescriptor(t *testing.T) {
	h, _ := start(t)
	if _, err := h.Hold(noFD{}, time.Now().Add(time.Second), func(Result) { t.Error("done called") }); err == nil {
		t.Fatal("Hold of a connection without a descriptor succeeded")
	}
}

// TestDetachAttach: a socket taken out of its net.Conn for a hold comes
// back as a working net.Conn, with what the client sent meanwhile.
func TestDetachAttach(t *testing.T) {
	h, _ := start(t)
	srv, cli := pair(t, listen(t))
	remote := srv.RemoteAddr().String()
	fd, err := Detach(srv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Write([]byte("x")); err == nil {
		t.Error("the detached net.Conn still writes")
	}
	r := newResult(t)
	if _, err := h.HoldFD(fd, time.Now().Add(time.Minute), r.done); err != nil {
		t.Fatal(err)
	}
	cli.Write([]byte("EHLO early\r\n"))
	if got := r.wait(t); got != Ready {
		t.Fatalf("result %v, want ready", got)
	}
	nc, err := Attach(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.RemoteAddr().String() != remote {
		t.Errorf("remote %s after Attach, want %s", nc.RemoteAddr(), remote)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := nc.Read(buf)
	if err != nil || string(buf[:n]) != "EHLO early\r\n" {
		t.Fatalf("read %q, %v; want what the client sent", buf[:n], err)
	}
	if _, err := nc.Write([]byte("554 no\r\n")); err != nil {
		t.Fatal(err)
	}
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := cli.Read(buf); err != nil || string(buf[:n]) != "554 no\r\n" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
	// Attach took fd over: closing the conn closes the socket.
	nc.Close()
	if _, err := cli.Read(buf); err != io.EOF {
		t.Errorf("client read after close: %v, want EOF", err)
	}
}

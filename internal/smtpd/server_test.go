package smtpd

import (
	"bufio"
	"context"
	"github.com/mxguard/mxguard/internal/reply"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return nc, bufio.NewReader(nc)
}

func expect(t *testing.T, br *bufio.Reader, prefix string) {
	t.Helper()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for %q: %v", prefix, err)
		}
		if len(line) > 3 && line[3] == '-' {
			continue
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("got %q, want %q", line, prefix)
		}
		return
	}
}

// TestSlowloris: a client that trickles a byte at a time cannot hold the
// session past the phase deadline, which is set once per wait.
func TestSlowloris(t *testing.T) {
	addr := testServer(t, Config{Timeouts: uniform(300 * time.Millisecond)}, &memHandler{}, ConnInfo{})
	nc, br := dial(t, addr)
	expect(t, br, "220")
	start := time.Now()
	done := make(chan time.Duration)
	go func() {
		line, _ := br.ReadString('\n')
		if strings.HasPrefix(line, "421 4.4.2") {
			done <- time.Since(start)
		}
		close(done)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 60; i++ { // 3 s of trickling at most
		select {
		case d, ok := <-done:
			if !ok {
				t.Fatal("session ended without 421 timeout")
			}
			if d > 2*time.Second {
				t.Fatalf("trickling client held the session %v", d)
			}
			return
		case <-tick.C:
			nc.Write([]byte("N"))
		}
	}
	t.Fatal("trickling client kept the session open")
}

func TestShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := &memHandler{}
	srv := NewServer(Config{Hostname: "mx.test", Timeouts: uniform(10 * time.Second), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	served := make(chan struct{}, 2)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				srv.ServeConn(context.Background(), nc, ConnInfo{Remote: netip.MustParseAddrPort(nc.RemoteAddr().String())}, h)
				served <- struct{}{}
			}()
		}
	}()
	idle, idleR := dial(t, ln.Addr().String())
	_ = idle
	expect(t, idleR, "220")
	busy, busyR := dial(t, ln.Addr().String())
	expect(t, busyR, "220")
	io.WriteString(busy, "HELO c\r\n")
	expect(t, busyR, "250")
	for _, cmd := range []string{"MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>"} {
		io.WriteString(busy, cmd+"\r\n") // one at a time: no PIPELINING after HELO
		expect(t, busyR, "250")
	}
	io.WriteString(busy, "DATA\r\n")
	expect(t, busyR, "354")

	shut := make(chan error)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	expect(t, idleR, "421 4.3.2 mx.test Service shutting down")
	// The session in DATA may finish its message.
	io.WriteString(busy, "hello\r\n.\r\n")
	expect(t, busyR, "250 2.0.0 Ok: queued as 1")
	io.WriteString(busy, "QUIT\r\n")
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if n := len(h.messages()); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

type panicHandler struct{ memHandler }

func (*panicHandler) Mail(*Session, Path, int64) *reply.Reply { panic("boom") }

// TestPanicIsolated: a panic in one session closes only that connection.
func TestPanicIsolated(t *testing.T) {
	addr := testServer(t, Config{Timeouts: uniform(10 * time.Second)}, &panicHandler{}, ConnInfo{})
	for i := 0; i < 2; i++ {
		nc, br := dial(t, addr)
		expect(t, br, "220")
		io.WriteString(nc, "HELO c\r\n")
		expect(t, br, "250")
		io.WriteString(nc, "MAIL FROM:<a@b.example>\r\n")
		if line, err := br.ReadString('\n'); err == nil {
			t.Fatalf("got %q after a panic, want the connection closed", line)
		}
	}
}

func BenchmarkSession(b *testing.B) { benchSession(b, nil, nil) }

// BenchmarkSessionStress is BenchmarkSession under Postfix's stress
// profile (10s timeouts, error and junk limits 1, greeting pause 2s): what
// reading the profile at each wait and command costs.
func BenchmarkSessionStress(b *testing.B) {
	benchSession(b, &Stress{CommandTimeout: 10 * time.Second, MaxErrors: 1, MaxJunk: 1, GreetPause: 2 * time.Second}, nil)
}

// BenchmarkSessionTarpit is BenchmarkSession with a Tarpit that never
// delays: what asking it before each batch of replies costs.
func BenchmarkSessionTarpit(b *testing.B) { benchSession(b, nil, zeroTarpit{}) }

type zeroTarpit struct{}

func (zeroTarpit) Delay() time.Duration { return 0 }

// benchSession is one pipelined transaction after another over loopback,
// client included, under stress if st is set, with tarpit if set.
func benchSession(b *testing.B, st *Stress, tarpit Tarpit) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	srv := NewServer(Config{Hostname: "mx.test", Timeouts: uniform(10 * time.Second), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv.SetStress(st)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(context.Background(), nc, ConnInfo{Remote: netip.MustParseAddrPort(nc.RemoteAddr().String()), Tarpit: tarpit}, discardHandler{})
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	br.ReadString('\n')
	msg := "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
	// A line of 998 octets and its CRLF: RFC 5321's longest (a longer one
	// is refused, 500, and the message not taken).
	body := strings.Repeat("x", 998) + "\r\n.\r\n"
	io.WriteString(nc, "EHLO c\r\n")
	for {
		l, _ := br.ReadString('\n')
		if l[3] == ' ' {
			break
		}
	}
	b.ReportAllocs()
	var last string
	for b.Loop() {
		io.WriteString(nc, msg)
		for i := 0; i < 3; i++ {
			br.ReadString('\n')
		}
		io.WriteString(nc, body)
		last, _ = br.ReadString('\n')
	}
	if !strings.HasPrefix(last, "250 ") {
		b.Fatalf("the last message got %q", last)
	}
}

type discardHandler struct{}

func (discardHandler) Mail(*Session, Path, int64) *reply.Reply { return nil }
func (discardHandler) Rcpt(*Session, Path) *reply.Reply        { return nil }
func (discardHandler) Reset(*Session)                          {}
func (discardHandler) Close(*Session)                          {}

// Data takes the message (a nil reply would be 451: not stored).
func (discardHandler) Data(_ *Session, r io.Reader) *reply.Reply {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil
	}
	return &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok"}
}

// TestShutdownEndsGreetPause: Shutdown does not wait out a greeting pause
// (up to five minutes): the client gets 421 at once instead of a greeting,
// whether its session waits in its goroutine or with the Holder.
func TestShutdownEndsGreetPause(t *testing.T) {
	for _, mode := range []string{"goroutine", "held", "early"} {
		t.Run(mode, func(t *testing.T) {
			cfg := Config{Hostname: "mx.test", Timeouts: uniform(10 * time.Second), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			held := mode != "goroutine"
			if held {
				cfg.Holder = startHolder(t)
			}
			srv := NewServer(cfg)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				info := ConnInfo{Remote: netip.MustParseAddrPort(nc.RemoteAddr().String()), GreetPause: time.Minute}
				serve := func(nc net.Conn, held Held) {
					info.Held = held
					srv.ServeConn(context.Background(), nc, info, &memHandler{})
				}
				if mode != "early" || !srv.HoldGreeting(nc, info.Remote.Addr(), info.GreetPause, serve) {
					serve(nc, Held{})
				}
			}()
			_, br := dial(t, ln.Addr().String())
			for deadline := time.Now().Add(5 * time.Second); srv.InGreetPause() == 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the session never entered the greeting pause")
				}
			}
			if held && cfg.Holder.Len() != 1 {
				t.Fatalf("%d sessions held, want 1", cfg.Holder.Len())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v after %v", err, time.Since(start))
			}
			expect(t, br, "421 4.3.2 mx.test Service shutting down")
			if srv.InGreetPause() != 0 {
				t.Errorf("InGreetPause %d after the shutdown", srv.InGreetPause())
			}
		})
	}
}

// TestHardStopEndsHeldPause: a held session ends with its context, even
// one the Holder does not share.
func TestHardStopEndsHeldPause(t *testing.T) {
	hd := startHolder(t)
	srv := NewServer(Config{Hostname: "mx.test", Timeouts: uniform(10 * time.Second), Holder: hd,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	h := &memHandler{}
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		srv.ServeConn(ctx, nc, ConnInfo{Remote: netip.MustParseAddrPort(nc.RemoteAddr().String()),
			GreetPause: time.Minute}, h)
	}()
	nc, _ := dial(t, ln.Addr().String())
	for deadline := time.Now().Add(5 * time.Second); hd.Len() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the session was never held")
		}
	}
	cancel()
	if n, err := nc.Read(make([]byte, 64)); err != io.EOF {
		t.Fatalf("read %d octets, %v after the hard stop; want the connection closed", n, err)
	}
	// The session is untracked just after its connection is closed.
	for deadline := time.Now().Add(5 * time.Second); srv.Sessions() != 0 || hd.Len() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions, %d held after the hard stop", srv.Sessions(), hd.Len())
		}
	}
}

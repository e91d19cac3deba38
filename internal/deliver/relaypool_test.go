package deliver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/postfixtest"
	"github.com/mxguard/mxguard/internal/smtpsink"
)

func newPooledRelay(t testing.TB, url string, size int, idle time.Duration) *Relay {
	t.Helper()
	r, err := NewRelay(url, "mx.test", fastTimeouts, testLogger(t), WithPool(size, idle))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// deliverMany delivers n messages through r from workers goroutines and
// fails the test unless each is delivered.
func deliverMany(t *testing.T, r *Relay, n, workers int) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				env := testEnvelope("s@example.org", fmt.Sprintf("r%d@example.net", i))
				res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
				if res[0].Status != Delivered {
					t.Errorf("message %d: %+v", i, res[0])
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// sinkSessions waits until the sink has seen the end of as many sessions
// as r opened connections, each after a QUIT, and msgs messages, and
// returns the sessions it counted: the connections r made, as the sink
// saw them.
func sinkSessions(t *testing.T, s *smtpsink.Sink, r *Relay, msgs int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sess, quit, mesg := s.Counts(t)
		if sess == quit && mesg == msgs && sess >= int(r.pool.opened.Load()) {
			return sess
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink counted %d sessions, %d QUITs, %d messages; want every session QUIT and %d messages", sess, quit, mesg, msgs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRelayPoolSink: 200 messages from 8 concurrent deliveries, through a
// pool of 3, reach smtp-sink over at most 3 connections, counted by the
// sink itself; every message is there.
func TestRelayPoolSink(t *testing.T) {
	for _, tt := range []struct {
		name  string
		flags []string
	}{
		{"smtp", nil},
		{"smtp no pipelining", []string{"-p"}},
		{"lmtp", []string{"-L"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := smtpsink.Start(t, smtpsink.Options{Count: true, Flags: tt.flags})
			scheme := "smtp"
			if slices.Contains(tt.flags, "-L") {
				scheme = "lmtp"
			}
			const n, size = 200, 3
			r := newPooledRelay(t, scheme+"://"+s.Addr, size, 5*time.Second)
			deliverMany(t, r, n, 8)
			r.Close()
			if sess := sinkSessions(t, s, r, n); sess > size {
				t.Errorf("%d messages over %d connections, want at most %d", n, sess, size)
			} else {
				t.Logf("%d messages over %d connections", n, sess)
			}
			if d := sinkDumps(t, s); len(d) != n {
				t.Errorf("smtp-sink holds %d messages, want %d", len(d), n)
			}
		})
	}
}

// TestRelayPoolPostfix: the same against Debian's Postfix, whose log
// says how many connections it took and what was said on them.
func TestRelayPoolPostfix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Postfix")
	}
	p := postfixtest.Start(t, postfixtest.Options{Domains: []string{"example.test"}, Users: []string{"alice@example.test"}})
	const n, size = 40, 2
	r := newPooledRelay(t, "smtp://"+p.Addr, size, 5*time.Second)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				env := testEnvelope("s@example.org", "alice@example.test")
				body := fmt.Sprintf("Subject: pooled %d\r\n\r\nhello\r\n", i)
				env.Size = int64(len(body))
				if res := r.Deliver(context.Background(), env, bodyOf(body), all(env), nil); res[0].Status != Delivered {
					t.Errorf("message %d: %+v", i, res[0])
				}
			}
		})
	}
	wg.Wait()
	r.Close()
	p.WaitMessages("alice@example.test", n)
	// Each connection ends with a line that counts its commands; the
	// readiness check of postfixtest sent none.
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := p.Maillog()
		connects, disconnects := countLines(log, "]: connect from "), countLines(log, "]: disconnect from ")
		if disconnects == connects && connects > 0 {
			ours := countLines(log, " mail=")
			if ours > size || ours == 0 {
				t.Errorf("%d messages over %d connections to Postfix, want at most %d:\n%s", n, ours, size, log)
			}
			if !strings.Contains(log, " rset=") {
				t.Errorf("no RSET on any connection:\n%s", log)
			}
			t.Logf("%d messages over %d connections to Postfix", n, ours)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix logged %d connects and %d disconnects", connects, disconnects)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countLines(log, s string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// TestRelayPoolRSET: a kept connection is checked with RSET before it
// carries the next message, and a second message goes over the first's
// connection.
func TestRelayPoolRSET(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}}
	r := newPooledRelay(t, "smtp://"+p.start(t), 2, 5*time.Second)
	deliverMany(t, r, 2, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	var verbs []string
	for _, c := range p.cmds {
		verb, _, _ := strings.Cut(c, " ")
		verbs = append(verbs, verb)
	}
	want := []string{"EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"}
	if p.conns != 1 || !slices.Equal(verbs, want) {
		t.Errorf("%d connections, commands %q; want 1 and %q", p.conns, verbs, want)
	}
}

// TestRelayPoolDownstreamRestart: the downstream goes away and comes back
// while a connection is kept; the next delivery finds the kept connection
// dead at its RSET and goes through on a new one, rather than failing.
func TestRelayPoolDownstreamRestart(t *testing.T) {
	s := startSink(t, false)
	r := newPooledRelay(t, "smtp://"+s.Addr, 2, 5*time.Second)
	deliverMany(t, r, 1, 1)
	s.Stop()
	s2 := startSinkAt(t, s.Addr, false)
	deliverMany(t, r, 1, 1)
	if d := sinkDumps(t, s2); len(d) != 1 {
		t.Errorf("the restarted sink holds %d messages, want 1", len(d))
	}
}

// TestRelayPoolUnclean: a connection on which the downstream said 421 is
// not used again, though it stays open: the next message goes over a new
// one.
func TestRelayPoolUnclean(t *testing.T) {
	var mu sync.Mutex
	first := true
	p := &peer{ext: []string{"PIPELINING"}, rcpt: func(string) string {
		mu.Lock()
		defer mu.Unlock()
		if first {
			first = false
			return "421 4.3.2 shutting down"
		}
		return "250 2.1.5 ok"
	}}
	r := newPooledRelay(t, "smtp://"+p.start(t), 2, 5*time.Second)
	env := testEnvelope("s@example.org", "a@example.net")
	if res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil); res[0].Status != Deferred {
		t.Fatalf("after 421: %+v, want deferred", res[0])
	}
	deliverMany(t, r, 1, 1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns != 2 || slices.Contains(p.cmds, "RSET") {
		t.Errorf("%d connections, commands %q; want a second connection and no RSET on the first", p.conns, p.cmds)
	}
}

// TestRelayPoolIdle: a connection unused for the idle time is closed with
// QUIT, without waiting for another delivery to notice.
func TestRelayPoolIdle(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{Count: true})
	r := newPooledRelay(t, "smtp://"+s.Addr, 2, 100*time.Millisecond)
	deliverMany(t, r, 1, 1)
	if sess := sinkSessions(t, s, r, 1); sess != 1 { // before Close: the idle time ended it
		t.Errorf("%d sessions", sess)
	}
}

// TestRelayPoolWear: a connection carries at most maxDeliveriesPerConn
// messages, and the pool never holds more connections at once than its
// size, whatever the number of concurrent deliveries.
func TestRelayPoolWear(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{Count: true})
	r := newPooledRelay(t, "smtp://"+s.Addr, 1, 5*time.Second)
	n := maxDeliveriesPerConn + 10
	deliverMany(t, r, n, 4)
	r.Close()
	if sess := sinkSessions(t, s, r, n); sess != 2 {
		t.Errorf("%d messages over %d connections of a pool of 1, want 2 (%d a connection)", n, sess, maxDeliveriesPerConn)
	}
}

// TestRelayPoolBound: 16 concurrent deliveries to a slow downstream
// through a pool of 3 never hold more than 3 connections at once.
func TestRelayPoolBound(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}, delay: 5 * time.Millisecond}
	r := newPooledRelay(t, "smtp://"+p.start(t), 3, 5*time.Second)
	deliverMany(t, r, 48, 16)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.maxActive > 3 || p.conns > 3 {
		t.Errorf("%d connections, %d at once; want at most 3", p.conns, p.maxActive)
	}
}

func TestNewRelayPool(t *testing.T) {
	for _, tt := range []struct {
		size int
		idle time.Duration
	}{{0, time.Second}, {2, 0}} {
		if _, err := NewRelay("smtp://h:25", "mx.test", fastTimeouts, nil, WithPool(tt.size, tt.idle)); err == nil {
			t.Errorf("WithPool(%d, %v): no error", tt.size, tt.idle)
		}
	}
}

package deliver

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/cache"
	"github.com/mxguard/mxguard/internal/smtpsink"
)

// testProberConfig caches nothing, so that every Verify probes.
var testProberConfig = ProberConfig{MaxInFlight: 4, IdleTimeout: 10 * time.Second}

func newTestProber(t testing.TB, url string, cfg ProberConfig, c cache.Cache) *Prober {
	t.Helper()
	return newTestProberTimeouts(t, url, cfg, c, fastTimeouts, testLogger(t))
}

func newTestProberTimeouts(t testing.TB, url string, cfg ProberConfig, c cache.Cache, to Timeouts, logger *slog.Logger) *Prober {
	t.Helper()
	r, err := NewRelay(url, "mx.test", to, logger)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProber(r, cfg, c, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeWithin(t, p, 10*time.Second) })
	return p
}

// verify calls Verify with a deadline, as a session's RCPT would.
func verify(p *Prober, addr string) Verdict {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.Verify(ctx, addr)
}

// waitFor polls cond until it holds, or fails the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdsWith returns the commands p received that start with prefix.
func (p *peer) cmdsWith(prefix string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, c := range p.cmds {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// closeWithin closes p, failing the test if that takes longer than d.
func closeWithin(t testing.TB, p *Prober, d time.Duration) {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		p.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(d):
		t.Fatalf("Close did not return within %v", d)
	}
}

func (p *peer) counts() (conns, active, maxActive int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns, p.active, p.maxActive
}

func TestNewProberBadConfig(t *testing.T) {
	r := newTestRelay(t, "smtp://127.0.0.1:25")
	for _, tc := range []struct {
		name  string
		relay *Relay
		cfg   ProberConfig
	}{
		{"no relay", nil, testProberConfig},
		{"no slots", r, ProberConfig{IdleTimeout: time.Second}},
		{"no idle timeout", r, ProberConfig{MaxInFlight: 1}},
		{"negative TTL", r, ProberConfig{MaxInFlight: 1, IdleTimeout: time.Second, NegativeTTL: -1}},
	} {
		if p, err := NewProber(tc.relay, tc.cfg, nil, nil); err == nil {
			p.Close()
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// TestProberSink maps real smtp-sink replies to verdicts.
func TestProberSink(t *testing.T) {
	tests := []struct {
		name   string
		scheme string
		flags  []string
		want   VerifyStatus
		reply  string
	}{
		{"accepts", "smtp", nil, Valid, "250 2.1.5"},
		{"accepts, no pipelining", "smtp", []string{"-p"}, Valid, "250 2.1.5"},
		{"accepts, no esmtp", "smtp", []string{"-e"}, Valid, "250 2.1.5"},
		{"lmtp accepts", "lmtp", []string{"-L"}, Valid, "250 2.1.5"},
		{"rcpt 5xx", "smtp", []string{"-f", "RCPT"}, Invalid, "500 5.3.0"},
		{"rcpt 4xx", "smtp", []string{"-r", "RCPT"}, Unverified, "450 4.3.0"},
		{"mail 5xx", "smtp", []string{"-f", "MAIL"}, Unverified, "500 5.3.0"},
		{"421 greeting", "smtp", []string{"-Q", "CONNECT"}, Unverified, "greeting: 421"},
		{"hangup at rcpt", "smtp", []string{"-q", "RCPT"}, Unverified, "451 4.4.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSink(t, false, tt.flags...)
			p := newTestProber(t, tt.scheme+"://"+s.Addr, testProberConfig, nil)
			for _, addr := range []string{"alice@example.org", "bob@example.org"} {
				v := verify(p, addr)
				if v.Status != tt.want || !strings.Contains(v.Reply, tt.reply) || v.Cached {
					t.Errorf("Verify(%s) = %+v, want %v with %q", addr, v, tt.want, tt.reply)
				}
			}
			p.Close()
			// A probe creates no message: smtp-sink completed no
			// transaction.
			for _, d := range s.Dumps(t) {
				if d != "" {
					t.Errorf("smtp-sink recorded a message:\n%s", d)
				}
			}
		})
	}
}

// TestProberPeer covers replies smtp-sink cannot give: a real refusal text,
// a mix per address, 421, and the commands on the wire.
func TestProberPeer(t *testing.T) {
	p := &peer{
		ext: []string{"PIPELINING", "ENHANCEDSTATUSCODES"},
		rcpt: func(addr string) string {
			switch {
			case strings.HasPrefix(addr, "unknown"):
				return "550 5.1.1 <" + addr + ">: Recipient address rejected: User unknown"
			case strings.HasPrefix(addr, "full"):
				return "452 4.2.2 mailbox full"
			case strings.HasPrefix(addr, "closing"):
				return "421 4.3.2 shutting down"
			}
			return "250 2.1.5 ok"
		},
	}
	pr := newTestProber(t, "smtp://"+p.start(t), testProberConfig, nil)
	for _, tc := range []struct {
		addr  string
		want  VerifyStatus
		reply string
	}{
		{"alice@example.org", Valid, "250 2.1.5 ok"},
		{"unknown@example.org", Invalid, "550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown"},
		{"full@example.org", Unverified, "452 4.2.2 mailbox full"},
		{"bob@example.org", Valid, "250 2.1.5 ok"},
		{"closing@example.org", Unverified, "421 4.3.2 shutting down"},
		{"carol@example.org", Valid, "250 2.1.5 ok"},
	} {
		if v := verify(pr, tc.addr); v.Status != tc.want || v.Reply != tc.reply {
			t.Errorf("Verify(%s) = %+v, want %v %q", tc.addr, v, tc.want, tc.reply)
		}
	}
	// One connection up to the 421 (after which the server hangs up), a
	// second after it; each probe is MAIL FROM:<>, RCPT, RSET, and never
	// DATA.
	if conns, _, _ := p.counts(); conns != 2 {
		t.Errorf("%d connections, want 2", conns)
	}
	p.mu.Lock()
	cmds := strings.Join(p.cmds, "\n")
	p.mu.Unlock()
	want := strings.Join([]string{
		"EHLO mx.test",
		"MAIL FROM:<>", "RCPT TO:<alice@example.org>", "RSET",
		"MAIL FROM:<>", "RCPT TO:<unknown@example.org>", "RSET",
		"MAIL FROM:<>", "RCPT TO:<full@example.org>", "RSET",
		"MAIL FROM:<>", "RCPT TO:<bob@example.org>", "RSET",
		"MAIL FROM:<>", "RCPT TO:<closing@example.org>", "RSET",
		"EHLO mx.test",
		"MAIL FROM:<>", "RCPT TO:<carol@example.org>", "RSET",
	}, "\n")
	if cmds != want {
		t.Errorf("commands:\n%s\nwant:\n%s", cmds, want)
	}
}

// TestProberReusesConnection: sequential probes share one connection to
// smtp-sink, with and without PIPELINING, and over LMTP on a unix socket.
func TestProberReusesConnection(t *testing.T) {
	for _, tc := range []struct {
		name   string
		scheme string
		unix   bool
		flags  []string
	}{
		{"smtp", "smtp", false, nil},
		{"smtp no pipelining", "smtp", false, []string{"-p"}},
		{"lmtp+unix", "lmtp+unix", true, []string{"-L"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSink(t, tc.unix, tc.flags...)
			px, addr := startProxy(t, s.Network, s.Addr)
			url := tc.scheme + "://" + addr
			if tc.unix {
				url = "lmtp+unix://" + addr
			}
			p := newTestProber(t, url, testProberConfig, nil)
			for i := range 20 {
				if v := verify(p, fmt.Sprintf("user%d@example.org", i)); v.Status != Valid {
					t.Fatalf("probe %d: %+v", i, v)
				}
			}
			if total, active, _ := px.counts(); total != 1 || active != 1 {
				t.Errorf("20 probes opened %d connections (%d open), want 1 kept open", total, active)
			}
			p.Close()
			waitFor(t, 5*time.Second, "Close closes the kept connection", func() bool {
				_, active, _ := px.counts()
				return active == 0
			})
		})
	}
}

// TestProberConnectionLimits: a connection is retired before Postfix's
// smtpd would count its RSETs or refusals against it.
func TestProberConnectionLimits(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}, rcpt: func(addr string) string {
		if strings.HasPrefix(addr, "unknown") {
			return "550 5.1.1 unknown"
		}
		return "250 ok"
	}}
	pr := newTestProber(t, "smtp://"+p.start(t), testProberConfig, nil)
	for i := range maxRefusalsPerConn + 1 {
		verify(pr, fmt.Sprintf("unknown%d@x", i))
	}
	if conns, _, _ := p.counts(); conns != 2 {
		t.Errorf("%d refusals took %d connections, want 2", maxRefusalsPerConn+1, conns)
	}
	for i := range maxProbesPerConn {
		verify(pr, fmt.Sprintf("known%d@x", i))
	}
	if conns, _, _ := p.counts(); conns != 3 {
		t.Errorf("%d more probes: %d connections in all, want 3", maxProbesPerConn, conns)
	}
	waitFor(t, 5*time.Second, "a QUIT on each retired connection", func() bool { return len(p.cmdsWith("QUIT")) == 2 })
}

// TestProberIdleExpiry: a kept connection is closed after IdleTimeout
// unused, with no probe needed to notice, and the next probe opens a new
// one.
func TestProberIdleExpiry(t *testing.T) {
	s := startSink(t, false)
	px, addr := startProxy(t, "tcp", s.Addr)
	cfg := testProberConfig
	cfg.IdleTimeout = 200 * time.Millisecond
	p := newTestProber(t, "smtp://"+addr, cfg, nil)
	if v := verify(p, "a@example.org"); v.Status != Valid {
		t.Fatal(v)
	}
	start := time.Now()
	waitFor(t, 5*time.Second, "the idle connection is closed", func() bool {
		_, active, _ := px.counts()
		return active == 0
	})
	if el := time.Since(start); el < cfg.IdleTimeout/2 {
		t.Errorf("closed after %v, before its idle timeout %v", el, cfg.IdleTimeout)
	}
	if v := verify(p, "b@example.org"); v.Status != Valid {
		t.Fatal(v)
	}
	if total, _, _ := px.counts(); total != 2 {
		t.Errorf("%d connections, want 2", total)
	}
}

// TestProberStaleConnection: the downstream restarts while a connection
// is kept; the next probe finds it dead before RCPT and retries on a new
// one.
func TestProberStaleConnection(t *testing.T) {
	s := startSink(t, false)
	p := newTestProber(t, "smtp://"+s.Addr, testProberConfig, nil)
	if v := verify(p, "a@example.org"); v.Status != Valid {
		t.Fatal(v)
	}
	s.Stop()
	startSinkAt(t, s.Addr, false)
	if v := verify(p, "b@example.org"); v.Status != Valid {
		t.Fatalf("after the downstream restarted: %+v, want valid on a new connection", v)
	}
}

// TestProberNoRetryAfterRcpt: a connection lost once RCPT was sent is not
// retried: the downstream may have counted it.
func TestProberNoRetryAfterRcpt(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}, rcpt: func(addr string) string {
		if strings.HasPrefix(addr, "crash") {
			return ""
		}
		return "250 ok"
	}}
	pr := newTestProber(t, "smtp://"+p.start(t), testProberConfig, nil)
	verify(pr, "a@x") // the connection is now a kept one
	if v := verify(pr, "crash@x"); v.Status != Unverified || !strings.Contains(v.Reply, "451 4.4.2") {
		t.Errorf("Verify = %+v, want unverified, connection lost", v)
	}
	if n := len(p.cmdsWith("RCPT TO:<crash@x>")); n != 1 {
		t.Errorf("RCPT sent %d times, want once", n)
	}
	if conns, _, _ := p.counts(); conns != 1 {
		t.Errorf("%d connections, want 1", conns)
	}
	if v := verify(pr, "b@x"); v.Status != Valid {
		t.Errorf("next probe: %+v", v)
	}
}

// TestProberDownstreamStopped: with the downstream gone, Verify is
// Unverified at once, not after a timeout; the outage and the recovery
// are logged once each.
func TestProberDownstreamStopped(t *testing.T) {
	s := startSink(t, false)
	var log syncBuffer
	to := fastTimeouts
	to.Connect = 2 * time.Second
	p := newTestProberTimeouts(t, "smtp://"+s.Addr, testProberConfig, nil, to, slog.New(slog.NewTextHandler(&log, nil)))
	if v := verify(p, "a@example.org"); v.Status != Valid {
		t.Fatal(v)
	}
	s.Stop()
	for i := range 3 {
		start := time.Now()
		v := verify(p, fmt.Sprintf("b%d@example.org", i))
		if el := time.Since(start); el >= to.Connect {
			t.Errorf("Verify took %v with the downstream stopped; the connect timeout is %v", el, to.Connect)
		}
		if v.Status != Unverified || !strings.Contains(v.Reply, "connection refused") {
			t.Errorf("Verify = %+v, want unverified, connection refused", v)
		}
	}
	startSinkAt(t, s.Addr, false)
	if v := verify(p, "c@example.org"); v.Status != Valid {
		t.Fatal(v)
	}
	out := log.String()
	if n := strings.Count(out, "downstream not answering"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "downstream answering probes again"); n != 1 {
		t.Errorf("recovery logged %d times, want once:\n%s", n, out)
	}
}

// TestProberSlow: a downstream slower than the caller's deadline, or than
// the relay's rcpt timeout, leaves the address unverified in time, and the
// connection interrupted mid-reply is not kept.
func TestProberSlow(t *testing.T) {
	s := startSink(t, false, "-p", "-W", "RCPT:3")
	px, addr := startProxy(t, "tcp", s.Addr)
	to := fastTimeouts
	to.Rcpt = 300 * time.Millisecond
	p := newTestProberTimeouts(t, "smtp://"+addr, testProberConfig, nil, to, testLogger(t))

	start := time.Now()
	v := verify(p, "a@example.org")
	if el := time.Since(start); el > to.Rcpt+time.Second {
		t.Errorf("Verify took %v; the rcpt timeout is %v", el, to.Rcpt)
	}
	if v.Status != Unverified || !strings.Contains(v.Reply, "timeout") {
		t.Errorf("Verify = %+v, want unverified by a timeout", v)
	}

	waitFor(t, 5*time.Second, "the timed-out connection is closed", func() bool {
		_, active, _ := px.counts()
		return active == 0
	})

	// With a long rcpt timeout the caller's deadline ends the probe, not
	// only the caller's wait.
	to.Rcpt = time.Minute
	p = newTestProberTimeouts(t, "smtp://"+addr, testProberConfig, nil, to, testLogger(t))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	v = p.Verify(ctx, "b@example.org")
	if el := time.Since(start); el > time.Second {
		t.Errorf("Verify took %v; its context allowed 100ms", el)
	}
	if v.Status != Unverified {
		t.Errorf("Verify = %+v, want unverified", v)
	}
	// smtp-sink answers after 3s; the probe must have given up by then.
	waitFor(t, 1500*time.Millisecond, "the probe ends with its caller's deadline", func() bool {
		_, active, _ := px.counts()
		return active == 0
	})
}

// TestProberMaxInFlight: 50 concurrent Verify calls for distinct addresses
// against a slow downstream open at most MaxInFlight connections; those
// that find no slot before their deadline are Unverified.
func TestProberMaxInFlight(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}, rcptDelay: 200 * time.Millisecond}
	cfg := testProberConfig
	cfg.MaxInFlight = 4
	pr := newTestProber(t, "smtp://"+p.start(t), cfg, nil)

	const n = 50
	const deadline = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	res := make([]Verdict, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = pr.Verify(ctx, fmt.Sprintf("user%d@example.org", i))
		}()
	}
	wg.Wait()
	if el := time.Since(start); el > deadline+time.Second {
		t.Errorf("the calls took %v; their deadline was %v", el, deadline)
	}
	count := map[VerifyStatus]int{}
	for _, v := range res {
		count[v.Status]++
	}
	_, _, maxActive := p.counts()
	t.Logf("valid %d, unverified %d, at most %d connections", count[Valid], count[Unverified], maxActive)
	if maxActive > cfg.MaxInFlight {
		t.Errorf("%d connections at once, MaxInFlight %d", maxActive, cfg.MaxInFlight)
	}
	if count[Valid] == 0 || count[Unverified] == 0 || count[Valid]+count[Unverified] != n {
		t.Errorf("verdicts %v: want some valid, the rest unverified", count)
	}
	// Every RCPT the downstream saw was a probe with a slot; those cut
	// short by the deadline are at most one per slot.
	if rcpts := len(p.cmdsWith("RCPT")); rcpts > count[Valid]+cfg.MaxInFlight {
		t.Errorf("%d RCPTs for %d valid verdicts", rcpts, count[Valid])
	}
	pr.Close()
	waitFor(t, 5*time.Second, "every connection closed", func() bool {
		_, active, _ := p.counts()
		return active == 0
	})
}

// TestProberSingleflight: concurrent Verify calls for one address (its
// domain spelled in any case) share one probe.
func TestProberSingleflight(t *testing.T) {
	// The probe lasts a second, for all 20 calls to join it even on a
	// loaded machine.
	p := &peer{ext: []string{"PIPELINING"}, rcptDelay: time.Second}
	pr := newTestProber(t, "smtp://"+p.start(t), testProberConfig, nil)
	var wg sync.WaitGroup
	res := make([]Verdict, 20)
	for i := range res {
		addr := "alice@example.org"
		if i%2 == 1 {
			addr = "alice@EXAMPLE.Org"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = verify(pr, addr)
		}()
	}
	wg.Wait()
	for i, v := range res {
		if v.Status != Valid {
			t.Errorf("call %d: %+v", i, v)
		}
	}
	if rcpts := p.cmdsWith("RCPT"); len(rcpts) != 1 {
		t.Errorf("%d RCPTs for 20 concurrent calls: %q", len(rcpts), rcpts)
	}
}

// TestProberCache: Valid is cached for PositiveTTL, Invalid for
// NegativeTTL, Unverified never; the key folds the domain's case, not the
// local part's.
func TestProberCache(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}, rcpt: func(addr string) string {
		switch strings.ToLower(addr[:strings.IndexByte(addr, '@')]) {
		case "unknown":
			return "550 5.1.1 unknown user"
		case "busy":
			return "451 4.3.0 try later"
		}
		return "250 2.1.5 ok"
	}}
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	mem, err := cache.NewMemory(100, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testProberConfig
	cfg.PositiveTTL, cfg.NegativeTTL = time.Hour, time.Minute
	pr := newTestProber(t, "smtp://"+p.start(t), cfg, mem)
	rcpts := func(addr string) int { return len(p.cmdsWith("RCPT TO:<" + addr + ">")) }

	for _, tc := range []struct {
		addr   string
		want   VerifyStatus
		reply  string
		cached bool
		probes int // RCPTs for addr so far
	}{
		{"known@example.org", Valid, "250 2.1.5 ok", false, 1},
		{"known@example.org", Valid, "250 2.1.5 ok", true, 1},
		{"known@EXAMPLE.ORG", Valid, "250 2.1.5 ok", true, 0},
		{"Known@example.org", Valid, "250 2.1.5 ok", false, 1},
		{"unknown@example.org", Invalid, "550 5.1.1 unknown user", false, 1},
		{"unknown@example.org", Invalid, "550 5.1.1 unknown user", true, 1},
		{"busy@example.org", Unverified, "451 4.3.0 try later", false, 1},
		{"busy@example.org", Unverified, "451 4.3.0 try later", false, 2},
	} {
		v := verify(pr, tc.addr)
		if v != (Verdict{tc.want, tc.reply, tc.cached}) {
			t.Errorf("Verify(%s) = %+v, want %v %q cached=%v", tc.addr, v, tc.want, tc.reply, tc.cached)
		}
		if n := rcpts(tc.addr); n != tc.probes {
			t.Errorf("after Verify(%s): %d probes of it, want %d", tc.addr, n, tc.probes)
		}
	}

	clk.advance(2 * time.Minute) // past NegativeTTL, within PositiveTTL
	if v := verify(pr, "unknown@example.org"); v.Status != Invalid || v.Cached {
		t.Errorf("after NegativeTTL: %+v, want a fresh probe", v)
	}
	if v := verify(pr, "known@example.org"); v.Status != Valid || !v.Cached {
		t.Errorf("within PositiveTTL: %+v, want cached", v)
	}
	clk.advance(time.Hour)
	if v := verify(pr, "known@example.org"); v.Status != Valid || v.Cached {
		t.Errorf("after PositiveTTL: %+v, want a fresh probe", v)
	}
	if n, m := rcpts("unknown@example.org"), rcpts("known@example.org"); n != 2 || m != 2 {
		t.Errorf("probes: unknown %d, known %d; want 2 each", n, m)
	}
}

// TestProberAddresses: an address that cannot go into RCPT as it is, is
// never sent; a non-ASCII one needs SMTPUTF8 downstream.
func TestProberAddresses(t *testing.T) {
	for _, tc := range []struct {
		ext   []string
		addr  string
		want  VerifyStatus
		reply string
		mail  string // the MAIL command sent, if any
	}{
		{nil, "evil@x>\r\nRSET", Invalid, "553 5.1.3", ""},
		{nil, "", Invalid, "553 5.1.3", ""},
		{nil, "jörg@example.org", Invalid, "553 5.6.7", ""},
		{[]string{"SMTPUTF8"}, "jörg@example.org", Valid, "250", "MAIL FROM:<> SMTPUTF8"},
		{nil, "postmaster", Valid, "250", "MAIL FROM:<>"},
	} {
		p := &peer{ext: tc.ext}
		pr := newTestProber(t, "smtp://"+p.start(t), testProberConfig, nil)
		v := verify(pr, tc.addr)
		if v.Status != tc.want || !strings.HasPrefix(v.Reply, tc.reply) {
			t.Errorf("Verify(%q) = %+v, want %v %q", tc.addr, v, tc.want, tc.reply)
		}
		mail := p.cmdsWith("MAIL")
		if (tc.mail == "" && len(mail) != 0) || (tc.mail != "" && (len(mail) != 1 || mail[0] != tc.mail)) {
			t.Errorf("Verify(%q) sent %q, want %q", tc.addr, mail, tc.mail)
		}
	}
}

// TestProberClose: Close interrupts a probe in flight, closes every
// connection and leaves no goroutine behind; Verify after Close is
// Unverified.
func TestProberClose(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}, rcptDelay: 2 * time.Second, rcpt: func(addr string) string {
		if strings.HasPrefix(addr, "slow") {
			return "250 ok"
		}
		return "250 fast"
	}}
	addr := p.start(t)
	before := runtime.NumGoroutine()
	cfg := testProberConfig
	cfg.IdleTimeout = 50 * time.Millisecond // the reaper runs too
	var log syncBuffer
	pr := newTestProberTimeouts(t, "smtp://"+addr, cfg, nil, fastTimeouts, slog.New(slog.NewTextHandler(&log, nil)))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan Verdict)
	for i := range 3 {
		go func() { done <- pr.Verify(ctx, fmt.Sprintf("slow%d@x", i)) }()
	}
	waitFor(t, 5*time.Second, "three probes reach RCPT", func() bool { return len(p.cmdsWith("RCPT")) == 3 })
	start := time.Now()
	closeWithin(t, pr, 10*time.Second)
	for range 3 {
		if v := <-done; v.Status != Unverified {
			t.Errorf("Verify in flight at Close = %+v, want unverified", v)
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v with probes in flight", el)
	}
	if v := verify(pr, "after@x"); v.Status != Unverified || !strings.Contains(v.Reply, "closed") {
		t.Errorf("Verify after Close = %+v", v)
	}
	if strings.Contains(log.String(), "not answering") {
		t.Errorf("probes cut short by Close were logged as an outage:\n%s", log.String())
	}
	// The peer notices only after its RCPT delay.
	waitFor(t, 10*time.Second, "the downstream sees every connection closed", func() bool {
		_, active, _ := p.counts()
		return active == 0
	})
	waitFor(t, 10*time.Second, fmt.Sprintf("goroutines back to %d (now %d)", before, runtime.NumGoroutine()), func() bool {
		return runtime.NumGoroutine() <= before
	})
}

// TestProberNoGoroutineLeak runs every kind of probe, then Close, and
// counts goroutines.
func TestProberNoGoroutineLeak(t *testing.T) {
	s := startSink(t, false)
	p := &peer{ext: []string{"PIPELINING"}, rcptDelay: 100 * time.Millisecond, rcpt: func(addr string) string {
		if strings.HasPrefix(addr, "crash") {
			return ""
		}
		return "250 ok"
	}}
	paddr := p.start(t)
	before := runtime.NumGoroutine()
	mem, _ := cache.NewMemory(100, nil)
	cfg := ProberConfig{MaxInFlight: 2, IdleTimeout: 100 * time.Millisecond, PositiveTTL: time.Hour}
	sp := newTestProber(t, "smtp://"+s.Addr, cfg, mem)
	pp := newTestProber(t, "smtp://"+paddr, cfg, nil)

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(2)
		go func() { defer wg.Done(); verify(sp, fmt.Sprintf("u%d@x", i%5)) }()
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			defer cancel()
			addr := fmt.Sprintf("u%d@x", i)
			if i%4 == 0 {
				addr = "crash" + addr
			}
			pp.Verify(ctx, addr)
		}()
	}
	wg.Wait()
	closeWithin(t, sp, 10*time.Second)
	closeWithin(t, pp, 10*time.Second)
	waitFor(t, 5*time.Second, "the downstream sees every connection closed", func() bool {
		_, active, _ := p.counts()
		return active == 0
	})
	waitFor(t, 5*time.Second, "goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

func TestFoldDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Alice@Example.ORG":   "Alice@example.org",
		"alice@example.org":   "alice@example.org",
		"postmaster":          "postmaster",
		`"A@B"@EXAMPLE.org`:   `"A@B"@example.org`,
		"jÖrg@BÜCHER.example": "jÖrg@bÜcher.example",
	} {
		if got := foldDomain(in); got != want {
			t.Errorf("foldDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestVerdictEncoding(t *testing.T) {
	for _, v := range []Verdict{{Valid, "250 2.1.5 ok", false}, {Invalid, "550 5.1.1 no", false}, {Invalid, "", false}} {
		got, ok := decodeVerdict(encodeVerdict(v))
		if !ok || got != v {
			t.Errorf("%+v came back as %+v, %v", v, got, ok)
		}
	}
	for _, s := range []string{"", "X250", "v250"} {
		if v, ok := decodeVerdict(s); ok {
			t.Errorf("decodeVerdict(%q) = %+v", s, v)
		}
	}
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// clock is a settable clock for cache expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// BenchmarkProbe measures one probe (MAIL FROM:<>, RCPT, RSET, pipelined)
// on a kept-open connection to smtp-sink on loopback, nothing cached.
func BenchmarkProbe(b *testing.B) {
	s := smtpsink.Start(b, smtpsink.Options{})
	p := newTestProberTimeouts(b, "smtp://"+s.Addr, ProberConfig{MaxInFlight: 1, IdleTimeout: time.Minute}, nil, fastTimeouts, nil)
	ctx := context.Background()
	if v := p.Verify(ctx, "warmup@example.org"); v.Status != Valid {
		b.Fatal(v)
	}
	b.ReportAllocs()
	for b.Loop() {
		if v := p.Verify(ctx, "alice@example.org"); v.Status != Valid {
			b.Fatal(v)
		}
	}
}

// BenchmarkVerifyCached measures a Verify answered from a Memory cache.
func BenchmarkVerifyCached(b *testing.B) {
	s := smtpsink.Start(b, smtpsink.Options{})
	mem, err := cache.NewMemory(65536, nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := ProberConfig{MaxInFlight: 1, IdleTimeout: time.Minute, PositiveTTL: time.Hour}
	p := newTestProberTimeouts(b, "smtp://"+s.Addr, cfg, mem, fastTimeouts, nil)
	ctx := context.Background()
	if v := p.Verify(ctx, "alice@example.org"); v.Status != Valid {
		b.Fatal(v)
	}
	b.ReportAllocs()
	for b.Loop() {
		if v := p.Verify(ctx, "alice@example.org"); !v.Cached {
			b.Fatal(v)
		}
	}
}

package deliver

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/smtpsink"
	"github.com/mxguard/mxguard/internal/spool"
	"github.com/mxguard/mxguard/internal/testcert"
)

const testBody = "From: a@example.org\r\nSubject: test\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"

func testEnvelope(from string, rcpts ...string) *spool.Envelope {
	env := &spool.Envelope{ID: "T1", From: from, Received: time.Unix(1_700_000_000, 0), Size: int64(len(testBody))}
	for _, r := range rcpts {
		env.Rcpts = append(env.Rcpts, spool.Rcpt{Addr: r})
	}
	return env
}

func bodyOf(s string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

func all(env *spool.Envelope) []int {
	idx := make([]int, len(env.Rcpts))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tWriter sends log output to the test log, where it shows up on failure.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fastTimeouts keep failing tests short.
var fastTimeouts = Timeouts{
	Connect: 2 * time.Second, Initial: 2 * time.Second, Helo: 2 * time.Second, Lhlo: 2 * time.Second,
	StartTLS: 2 * time.Second, Mail: 2 * time.Second, Rcpt: 2 * time.Second, DataInit: 2 * time.Second,
	DataBlock: 2 * time.Second, DataFinal: 2 * time.Second, Quit: 2 * time.Second,
}

func newTestRelay(t testing.TB, url string) *Relay {
	t.Helper()
	r, err := NewRelay(url, "mx.test", fastTimeouts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func statuses(res []Result) []Status {
	out := make([]Status, len(res))
	for i, r := range res {
		out[i] = r.Status
	}
	return out
}

// wantBody is testBody as smtp-sink stores it: dot-stuffing undone, LF.
var wantBody = strings.ReplaceAll(testBody, "\r\n", "\n")

func TestRelaySink(t *testing.T) {
	tests := []struct {
		name     string
		scheme   string
		unix     bool
		flags    []string
		want     []Status
		reply    string // a substring of every reply
		wantDump bool
	}{
		{"smtp pipelining", "smtp", false, nil, []Status{Delivered, Delivered}, "250 2.0.0", true},
		{"smtp no pipelining", "smtp", false, []string{"-p"}, []Status{Delivered, Delivered}, "250 2.0.0", true},
		{"smtp no esmtp", "smtp", false, []string{"-e"}, []Status{Delivered, Delivered}, "250 2.0.0", true},
		{"smtp rcpt 4xx", "smtp", false, []string{"-r", "RCPT"}, []Status{Deferred, Deferred}, "450 4.3.0", false},
		{"smtp rcpt 5xx", "smtp", false, []string{"-f", "RCPT"}, []Status{Failed, Failed}, "500 5.3.0", false},
		{"smtp mail 4xx", "smtp", false, []string{"-r", "MAIL"}, []Status{Deferred, Deferred}, "450 4.3.0", false},
		{"smtp data 5xx", "smtp", false, []string{"-f", "DATA"}, []Status{Failed, Failed}, "500 5.3.0", false},
		{"smtp dot 5xx", "smtp", false, []string{"-f", "."}, []Status{Failed, Failed}, "500 5.3.0", true},
		{"smtp dot 4xx", "smtp", false, []string{"-r", "."}, []Status{Deferred, Deferred}, "450 4.3.0", true},
		{"smtp 421 greeting", "smtp", false, []string{"-Q", "CONNECT"}, []Status{Deferred, Deferred}, "421", false},
		{"smtp hangup after DATA", "smtp", false, []string{"-q", "DATA"}, []Status{Deferred, Deferred}, "451 4.4.2", false},
		{"lmtp", "lmtp", false, []string{"-L"}, []Status{Delivered, Delivered}, "250 2.2.0", true},
		{"lmtp dot 5xx", "lmtp", false, []string{"-L", "-f", "."}, []Status{Failed, Failed}, "500 5.3.0", true},
		{"lmtp+unix", "lmtp+unix", true, []string{"-L"}, []Status{Delivered, Delivered}, "250 2.2.0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSink(t, tt.unix, tt.flags...)
			url := tt.scheme + "://" + s.Addr
			if tt.unix {
				url = "lmtp+unix://" + s.Addr
			}
			r := newTestRelay(t, url)
			env := testEnvelope("sender@example.org", "a@example.net", "b@example.net")
			res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
			if got := statuses(res); !slices.Equal(got, tt.want) {
				t.Fatalf("statuses = %v, want %v (%v)", got, tt.want, res)
			}
			for _, r := range res {
				if !strings.Contains(r.Reply, tt.reply) {
					t.Errorf("reply %q does not contain %q", r.Reply, tt.reply)
				}
			}
			dumps := sinkDumps(t, s)
			if !tt.wantDump {
				return
			}
			if len(dumps) != 1 {
				t.Fatalf("smtp-sink recorded %d transactions, want 1", len(dumps))
			}
			d := dumps[0]
			if !strings.HasPrefix(d.mailArgs, "<sender@example.org>") {
				t.Errorf("MAIL args %q", d.mailArgs)
			}
			if want := []string{"<a@example.net>", "<b@example.net>"}; !slices.Equal(d.rcpts, want) {
				t.Errorf("RCPT args %q, want %q", d.rcpts, want)
			}
			if got := strings.TrimSuffix(d.body, "\n"); got != wantBody {
				t.Errorf("body arrived as\n%q\nwant\n%q", got, wantBody)
			}
		})
	}
}

func TestRelayNullSender(t *testing.T) {
	s := startSink(t, false)
	r := newTestRelay(t, "smtp://"+s.Addr)
	env := testEnvelope("", "a@example.net")
	res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
	if res[0].Status != Delivered {
		t.Fatal(res)
	}
	d := sinkDumps(t, s)
	if len(d) != 1 || d[0].mailArgs != "<>" {
		t.Fatalf("dumps %+v, want one from the null sender", d)
	}
}

// smtp-sink does not announce SIZE; the peer does.
func TestRelaySize(t *testing.T) {
	if len(testBody) != 83 {
		t.Fatalf("testBody is %d octets; update the SIZE values below", len(testBody))
	}
	tests := []struct {
		ext    string
		status Status
		mail   string
	}{
		{"SIZE 1000", Delivered, "MAIL FROM:<s@example.org> SIZE=83"},
		{"SIZE", Delivered, "MAIL FROM:<s@example.org> SIZE=83"},
		{"SIZE 10", Failed, ""},
		{"8BITMIME", Delivered, "MAIL FROM:<s@example.org>"},
	}
	for _, tt := range tests {
		p := &peer{ext: []string{tt.ext}}
		r := newTestRelay(t, "smtp://"+p.start(t))
		env := testEnvelope("s@example.org", "a@x")
		res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
		if res[0].Status != tt.status {
			t.Errorf("%s: %+v, want %v", tt.ext, res[0], tt.status)
		}
		p.mu.Lock()
		var mail string
		for _, c := range p.cmds {
			if strings.HasPrefix(c, "MAIL") {
				mail = c
			}
		}
		p.mu.Unlock()
		if mail != tt.mail {
			t.Errorf("%s: sent %q, want %q", tt.ext, mail, tt.mail)
		}
	}
}

func TestRelayConnectionRefused(t *testing.T) {
	r := newTestRelay(t, "smtp://"+smtpsink.FreePort(t))
	env := testEnvelope("s@example.org", "a@example.net")
	res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
	if res[0].Status != Deferred || !strings.Contains(res[0].Reply, "connection refused") {
		t.Fatalf("got %+v, want deferred with connection refused", res[0])
	}
}

func TestRelayTimeouts(t *testing.T) {
	tests := []struct {
		name  string
		flags []string
		set   func(*Timeouts)
	}{
		// -p: without PIPELINING each reply is waited for on its own;
		// pipelined, the server may hold all replies until DATA.
		{"datainit", []string{"-p", "-w", "3"}, func(t *Timeouts) { t.DataInit = 100 * time.Millisecond }},
		{"rcpt", []string{"-p", "-W", "RCPT:3"}, func(t *Timeouts) { t.Rcpt = 100 * time.Millisecond }},
		{"helo", []string{"-W", "EHLO:3"}, func(t *Timeouts) { t.Helo = 100 * time.Millisecond }},
		{"datafinal", []string{"-p", "-W", ".:3"}, func(t *Timeouts) { t.DataFinal = 100 * time.Millisecond }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSink(t, false, tt.flags...)
			to := fastTimeouts
			tt.set(&to)
			r, err := NewRelay("smtp://"+s.Addr, "mx.test", to, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			env := testEnvelope("s@example.org", "a@example.net")
			start := time.Now()
			res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("took %v; the %s timeout was 100ms", el, tt.name)
			}
			if res[0].Status != Deferred || !strings.Contains(res[0].Reply, "timeout") {
				t.Fatalf("got %+v, want deferred by a timeout", res[0])
			}
		})
	}
}

func TestRelayContextCancel(t *testing.T) {
	s := startSink(t, false, "-w", "5")
	r := newTestRelay(t, "smtp://"+s.Addr)
	env := testEnvelope("s@example.org", "a@example.net")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := r.Deliver(ctx, env, bodyOf(testBody), all(env), nil)
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Deliver took %v after its context ended", el)
	}
	if res[0].Status != Deferred {
		t.Fatalf("got %+v, want deferred", res[0])
	}
}

// TestRelayLMTPMixed checks that LMTP replies after the final dot are
// matched to the accepted recipients in order, skipping rejected ones.
func TestRelayLMTPMixed(t *testing.T) {
	p := &peer{
		lmtp: true,
		ext:  []string{"PIPELINING", "ENHANCEDSTATUSCODES"},
		rcpt: func(addr string) string {
			if strings.HasPrefix(addr, "unknown") {
				return "550 5.1.1 no such user"
			}
			if strings.HasPrefix(addr, "busy") {
				return "451 4.3.0 try later"
			}
			return "250 2.1.5 ok"
		},
		final: []string{"250 2.0.0 <a> saved", "452 4.2.2 <c> mailbox full", "552 5.2.2 <d> over quota"},
	}
	addr := p.start(t)
	r := newTestRelay(t, "lmtp://"+addr)
	env := testEnvelope("s@example.org", "a@x", "unknown@x", "c@x", "busy@x", "d@x")
	res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
	want := []Result{
		{Delivered, "250 2.0.0 <a> saved"},
		{Failed, "550 5.1.1 no such user"},
		{Deferred, "452 4.2.2 <c> mailbox full"},
		{Deferred, "451 4.3.0 try later"},
		{Failed, "552 5.2.2 <d> over quota"},
	}
	if !slices.Equal(res, want) {
		t.Fatalf("results\n%v\nwant\n%v", res, want)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmds[0] != "LHLO mx.test" {
		t.Errorf("first command %q, want LHLO", p.cmds[0])
	}
	if len(p.bodies) != 1 || p.bodies[0] != testBody[:strings.Index(testBody, ".leading")]+"..leading dot\r\n...two dots\r\n..\r\nlast\r\n" {
		t.Errorf("body on the wire %q: not dot-stuffed as expected", p.bodies)
	}
}

func TestRelaySMTPPartialRcpt(t *testing.T) {
	p := &peer{
		ext: []string{"PIPELINING"},
		rcpt: func(addr string) string {
			if addr == "bad@x" {
				return "550 5.1.1 unknown"
			}
			return "250 ok"
		},
		final: []string{"250 2.0.0 queued"},
	}
	r := newTestRelay(t, "smtp://"+p.start(t))
	env := testEnvelope("s@example.org", "a@x", "bad@x", "c@x")
	res := r.Deliver(context.Background(), env, bodyOf(testBody), []int{0, 1, 2}, nil)
	if got, want := statuses(res), []Status{Delivered, Failed, Delivered}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	// Only the requested recipients are sent.
	p2 := &peer{ext: []string{"PIPELINING"}}
	r2 := newTestRelay(t, "smtp://"+p2.start(t))
	res = r2.Deliver(context.Background(), env, bodyOf(testBody), []int{2}, nil)
	if len(res) != 1 || res[0].Status != Delivered {
		t.Fatal(res)
	}
	p2.mu.Lock()
	defer p2.mu.Unlock()
	var rcpts []string
	for _, c := range p2.cmds {
		if strings.HasPrefix(c, "RCPT") {
			rcpts = append(rcpts, c)
		}
	}
	if !slices.Equal(rcpts, []string{"RCPT TO:<c@x>"}) {
		t.Errorf("sent %q, want only c@x", rcpts)
	}
}

func TestRelayStartTLS(t *testing.T) {
	tests := []struct {
		name     string
		breakTLS bool                        // the peer fails the handshake
		check    func(t *testing.T, p *peer) // with p.mu held
	}{
		{"used", false, func(t *testing.T, p *peer) {
			// EHLO, STARTTLS, EHLO again inside TLS, then the transaction.
			if len(p.cmds) < 3 || p.cmds[1] != "STARTTLS" || p.cmds[2] != "EHLO mx.test" {
				t.Errorf("commands %q", p.cmds)
			}
		}},
		{"broken falls back to plaintext", true, func(t *testing.T, p *peer) {
			if p.conns != 2 || slices.Contains(p.cmds[2:], "STARTTLS") {
				t.Errorf("%d connections, commands %q; want a second, plaintext one", p.conns, p.cmds)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &peer{ext: []string{"PIPELINING"}, breakTLS: tt.breakTLS}
			if !tt.breakTLS {
				p.tls = &tls.Config{Certificates: []tls.Certificate{testcert.New(t, "127.0.0.1")}}
			}
			r := newTestRelay(t, "smtp://"+p.start(t))
			env := testEnvelope("s@example.org", "a@x")
			res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
			if res[0].Status != Delivered {
				t.Fatal(res)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			tt.check(t, p)
		})
	}
}

func TestRelayBadAddresses(t *testing.T) {
	p := &peer{ext: []string{"PIPELINING"}}
	r := newTestRelay(t, "smtp://"+p.start(t))
	env := testEnvelope("s@example.org", "ok@x", "evil@x>\r\nRSET", "")
	res := r.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
	if got, want := statuses(res), []Status{Delivered, Failed, Failed}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if slices.Contains(p.cmds, "RSET") {
		t.Errorf("a recipient injected a command: %q", p.cmds)
	}
}

func TestNewRelay(t *testing.T) {
	tests := []struct {
		url           string
		network, addr string
		lmtp          bool
		err           bool
	}{
		{url: "smtp://127.0.0.1:2525", network: "tcp", addr: "127.0.0.1:2525"},
		{url: "smtp://mail.example.org", network: "tcp", addr: "mail.example.org:25"},
		{url: "lmtp://[::1]:24", network: "tcp", addr: "[::1]:24", lmtp: true},
		{url: "lmtp://localhost", network: "tcp", addr: "localhost:24", lmtp: true},
		{url: "lmtp+unix:///var/run/dovecot/lmtp", network: "unix", addr: "/var/run/dovecot/lmtp", lmtp: true},
		{url: "http://x", err: true},
		{url: "smtp://", err: true},
		{url: "smtp://h:0", err: true},
		{url: "smtp://h:99999", err: true},
		{url: "smtp://h:25/path", err: true},
		{url: "smtp://u:p@h:25", err: true},
		{url: "lmtp+unix://host/path", err: true},
		{url: "lmtp+unix://", err: true},
		{url: "::", err: true},
	}
	if _, err := NewRelay("smtp://h:25", "mx.test", Timeouts{Connect: time.Second}, nil); err == nil {
		t.Error("NewRelay with unset timeouts: no error")
	}
	for _, tt := range tests {
		r, err := NewRelay(tt.url, "mx.test", fastTimeouts, slog.New(slog.DiscardHandler))
		if tt.err {
			if err == nil {
				t.Errorf("NewRelay(%q) = %+v, want an error", tt.url, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewRelay(%q): %v", tt.url, err)
			continue
		}
		if r.network != tt.network || r.addr != tt.addr || r.lmtp != tt.lmtp {
			t.Errorf("NewRelay(%q) = %s %s lmtp=%v, want %s %s lmtp=%v", tt.url, r.network, r.addr, r.lmtp, tt.network, tt.addr, tt.lmtp)
		}
		if r.t != fastTimeouts {
			t.Errorf("timeouts %+v, want the ones given", r.t)
		}
	}
}

// BenchmarkRelaySink measures one SMTP transaction (pipelined envelope, a
// 50 KiB body) against smtp-sink on loopback, on a new connection each
// time (connect, EHLO, ..., QUIT) and on a kept one (RSET, ...).
func BenchmarkRelaySink(b *testing.B) {
	for _, tt := range []struct {
		name string
		opts []RelayOption
	}{{"conn=new", nil}, {"conn=kept", []RelayOption{WithPool(1, time.Minute)}}} {
		b.Run(tt.name, func(b *testing.B) {
			s := startSink(b, false)
			r, err := NewRelay("smtp://"+s.Addr, "mx.test", fastTimeouts, nil, tt.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			msg := string(benchMessage())
			env := testEnvelope("s@example.org", "a@example.net", "b@example.net")
			env.Size = int64(len(msg))
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				res := r.Deliver(context.Background(), env, bodyOf(msg), []int{0, 1}, nil)
				if res[0].Status != Delivered || res[1].Status != Delivered {
					b.Fatal(res)
				}
			}
		})
	}
}

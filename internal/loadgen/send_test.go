package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/smtpsink"
)

// testCtx bounds a test's run so that a bug cannot hang it.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustAddrs(t testing.TB, s string) *AddrPool {
	t.Helper()
	p, err := ParseAddrs(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSendSink(t *testing.T) {
	tests := []struct {
		name       string
		sinkFlags  []string
		cfg        SendConfig
		wantSess   int      // 0: one long session per worker that got a message
		wantAddrs  []string // X-Client-Addr values smtp-sink saw, if checked
		wantRcpts  []string // X-Rcpt-Args of each message
		wantHELO   string   // "EHLO" or "HELO": smtp-sink's X-Client-Proto ESMTP or SMTP
		pipelining bool
	}{
		{
			name:      "one message per session",
			cfg:       SendConfig{Concurrency: 8, Messages: 200, MsgsPerConn: 1, Size: 1024},
			wantSess:  200,
			wantRcpts: []string{"<user@localhost>"},
		},
		{
			name: "pipelined, three recipients, seven per session, four source addresses",
			cfg: SendConfig{Concurrency: 5, Messages: 210, MsgsPerConn: 7, Size: 3000, Rcpts: 3,
				Pipelining: true, Bind: mustAddrs(t, "127.0.0.2-127.0.0.5")},
			wantSess:  30,
			wantAddrs: []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"},
			wantRcpts: []string{"<user@localhost>", "<2user@localhost>", "<3user@localhost>"},
		},
		{
			name:      "one long session per worker",
			cfg:       SendConfig{Concurrency: 4, Messages: 300, MsgsPerConn: 0, Size: 20000, Pipelining: true},
			wantRcpts: []string{"<user@localhost>"},
		},
		{
			name:      "pipelining asked for but not offered",
			sinkFlags: []string{"-p"},
			cfg:       SendConfig{Concurrency: 3, Messages: 60, MsgsPerConn: 5, Size: 0, Rcpts: 2, Pipelining: true},
			wantSess:  12,
			wantRcpts: []string{"<user@localhost>", "<2user@localhost>"},
		},
		{
			name:      "EHLO refused, HELO used",
			sinkFlags: []string{"-e"},
			cfg:       SendConfig{Concurrency: 2, Messages: 20, MsgsPerConn: 10, Size: 100},
			wantSess:  2,
			wantRcpts: []string{"<user@localhost>"},
			wantHELO:  "SMTP",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSink(t, tt.sinkFlags...)
			cfg := tt.cfg
			cfg.Addr, cfg.From, cfg.To = s.Addr, "load@example.org", "user@localhost"
			res, err := Send(testCtx(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			n := cfg.Messages
			if res.Messages != n || res.Accepted != n || res.Errors+res.TempFail+res.PermFail != 0 {
				t.Errorf("messages %d: accepted %d, temp %d, perm %d, errors %d %v; want all %d accepted",
					res.Messages, res.Accepted, res.TempFail, res.PermFail, res.Errors, res.ErrorKinds, n)
			}
			if res.SessionLatency.Count != res.Sessions {
				t.Errorf("sessions %d, ended with QUIT %d", res.Sessions, res.SessionLatency.Count)
			}
			if tt.wantSess > 0 && res.Sessions != tt.wantSess ||
				tt.wantSess == 0 && (res.Sessions < 1 || res.Sessions > cfg.Concurrency) {
				t.Errorf("sessions %d, want %d", res.Sessions, tt.wantSess)
			}
			if res.MessageLatency.Count != n {
				t.Errorf("message latencies %d, want %d", res.MessageLatency.Count, n)
			}
			if len(res.ErrorKinds) != 0 {
				t.Errorf("errors %v", res.ErrorKinds)
			}

			msgs := messages(t, s)
			if len(msgs) != n {
				t.Fatalf("smtp-sink took %d messages, want %d", len(msgs), n)
			}
			addrs := map[string]bool{}
			for _, m := range msgs {
				addrs[header(m, "X-Client-Addr")[0]] = true
				if got := header(m, "X-Rcpt-Args"); !slices.Equal(got, tt.wantRcpts) {
					t.Fatalf("recipients %q, want %q", got, tt.wantRcpts)
				}
				if got := header(m, "X-Mail-Args"); len(got) != 1 || got[0] != "<load@example.org>" {
					t.Fatalf("MAIL args %q", got)
				}
				proto := "ESMTP"
				if tt.wantHELO != "" {
					proto = tt.wantHELO
				}
				if got := header(m, "X-Client-Proto"); len(got) != 1 || got[0] != proto {
					t.Fatalf("protocol %q, want %s", got, proto)
				}
			}
			if tt.wantAddrs != nil {
				got := slices.Sorted(func(yield func(string) bool) {
					for a := range addrs {
						if !yield(a) {
							return
						}
					}
				})
				if !slices.Equal(got, tt.wantAddrs) {
					t.Errorf("source addresses %q, want %q", got, tt.wantAddrs)
				}
			}
		})
	}
}

// header returns the values of a header field in an smtp-sink dump.
func header(msg, name string) []string {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `: (.*)$`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(msg, -1) {
		out = append(out, strings.TrimRight(m[1], "\r"))
	}
	return out
}

func TestSendRefusals(t *testing.T) {
	const n = 40
	tests := []struct {
		name       string
		sinkFlags  []string          // for smtp-sink, or
		replies    map[string]string // for the scripted server, which offers PIPELINING
		pipelining bool
		wantTemp   int
		wantPerm   int
		wantSess   int // sessions that got past EHLO
		refusal    string
		kept       int // messages the server keeps: smtp-sink dumps before refusing the dot
	}{
		{name: "RCPT soft", sinkFlags: []string{"-r", "RCPT"}, wantTemp: n, wantSess: 4, refusal: "RCPT 450"},
		{name: "MAIL hard", sinkFlags: []string{"-f", "MAIL"}, wantPerm: n, wantSess: 4, refusal: "MAIL 500"},
		{name: "DATA soft", sinkFlags: []string{"-r", "DATA"}, wantTemp: n, wantSess: 4, refusal: "DATA 450"},
		{name: "dot hard", sinkFlags: []string{"-f", "."}, wantPerm: n, wantSess: 4, refusal: ". 500", kept: n},
		{name: "421 after RCPT", sinkFlags: []string{"-Q", "RCPT"}, wantTemp: n, wantSess: n, refusal: "RCPT 421"},
		{name: "greeting refused", sinkFlags: []string{"-f", "CONNECT"}, wantPerm: n, wantSess: 0, refusal: "CONNECT 500"},
		{
			name:       "pipelined, RCPT refused, DATA refused",
			replies:    map[string]string{"RCPT": "550 5.1.1 no such user", "DATA": "554 5.5.1 no valid recipients"},
			pipelining: true, wantPerm: n, wantSess: 4, refusal: "RCPT 550",
		},
		{
			name:       "pipelined, RCPT refused, DATA 354 anyway",
			replies:    map[string]string{"RCPT": "450 4.2.0 try later", ".": "554 no recipients"},
			pipelining: true, wantTemp: n, wantSess: 4, refusal: "RCPT 450",
		},
		{
			name:       "pipelined, MAIL refused",
			replies:    map[string]string{"MAIL": "451 4.3.0 later", "RCPT": "503 need MAIL", "DATA": "503 need RCPT"},
			pipelining: true, wantTemp: n, wantSess: 4, refusal: "MAIL 451",
		},
		{
			name:       "pipelined, dot refused",
			replies:    map[string]string{".": "452 4.3.1 Insufficient system storage"},
			pipelining: true, wantTemp: n, wantSess: 4, refusal: ". 452",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addr string
			var taken func() int
			var pipelined atomic.Int64
			if tt.replies != nil {
				addr = startLineServer(t, scripted(tt.replies, &pipelined)).addr
				taken = func() int { return 0 } // the scripted server keeps nothing
			} else {
				s := startSink(t, tt.sinkFlags...)
				addr, taken = s.Addr, func() int { return len(messages(t, s)) }
			}
			res, err := Send(testCtx(t), SendConfig{
				Addr: addr, Concurrency: 4, Messages: n, MsgsPerConn: n / 4,
				To: "user@localhost", Pipelining: tt.pipelining, Timeout: 5 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Messages != n || res.TempFail != tt.wantTemp || res.PermFail != tt.wantPerm || res.Accepted != 0 || res.Errors != 0 {
				t.Errorf("messages %d: accepted %d, temp %d, perm %d, errors %d %v; want temp %d, perm %d",
					res.Messages, res.Accepted, res.TempFail, res.PermFail, res.Errors, res.ErrorKinds, tt.wantTemp, tt.wantPerm)
			}
			if res.Refusals[tt.refusal] != n || len(res.Refusals) != 1 {
				t.Errorf("refusals %v, want %d × %q", res.Refusals, n, tt.refusal)
			}
			if res.Sessions != tt.wantSess {
				t.Errorf("sessions %d, want %d", res.Sessions, tt.wantSess)
			}
			if len(res.ErrorKinds) != 0 {
				t.Errorf("errors %v", res.ErrorKinds)
			}
			if tt.pipelining && pipelined.Load() == 0 {
				t.Error("no MAIL arrived pipelined")
			}
			if got := taken(); got != tt.kept {
				t.Errorf("server kept %d messages, want %d", got, tt.kept)
			}
		})
	}
}

// TestSendQuitNoWait has a server that never answers QUIT: waiting for
// the reply times out every session, and with QuitNoWait no session waits.
func TestSendQuitNoWait(t *testing.T) {
	addr := startLineServer(t, scripted(map[string]string{"QUIT": "(silent)"}, new(atomic.Int64))).addr
	for _, noWait := range []bool{false, true} {
		res, err := Send(testCtx(t), SendConfig{
			Addr: addr, Concurrency: 2, Messages: 4, MsgsPerConn: 1, To: "user@localhost",
			Timeout: time.Second, QuitNoWait: noWait,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Accepted != 4 || res.Sessions != 4 || !res.QuitNoWait == noWait {
			t.Fatalf("QuitNoWait %v: accepted %d in %d sessions, result's QuitNoWait %v", noWait, res.Accepted, res.Sessions, res.QuitNoWait)
		}
		wantTimeouts, wantLat := 4, 0
		if noWait {
			wantTimeouts, wantLat = 0, 4
		}
		if res.ErrorKinds["timeout"] != wantTimeouts || res.SessionLatency.Count != wantLat {
			t.Errorf("QuitNoWait %v: errors %v, %d session latencies; want %d timeouts, %d latencies",
				noWait, res.ErrorKinds, res.SessionLatency.Count, wantTimeouts, wantLat)
		}
		if noWait {
			checkText(t, res, "per session (connect to QUIT sent)")
		}
	}
}

// TestSendMaildirWaitAccepted sends fewer messages than the Maildir wait
// expects: the wait ends when the accepted ones are there, long before its
// timeout, and the delivery is incomplete.
func TestSendMaildirWaitAccepted(t *testing.T) {
	s := startSink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Send(ctx, SendConfig{
		Addr: s.Addr, Concurrency: 2, Messages: 6, To: "user@localhost",
		MaildirDir: s.Dir, MaildirExpect: 40, MaildirTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("the wait ran until the context's deadline")
	}
	if d := res.Delivery; d == nil || d.Complete || d.Found != 6 {
		t.Errorf("delivery %+v; want incomplete with the 6 there", res.Delivery)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	res, err := Send(testCtx(t), SendConfig{Addr: smtpsink.FreePort(t), Concurrency: 3, Messages: 30, To: "u@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 30 || res.ErrorKinds["ECONNREFUSED"] != 30 || res.Sessions != 0 {
		t.Errorf("errors %d %v, sessions %d; want 30 ECONNREFUSED, no session", res.Errors, res.ErrorKinds, res.Sessions)
	}
}

func TestSendMaildirWait(t *testing.T) {
	s := startSink(t)
	res, err := Send(testCtx(t), SendConfig{
		Addr: s.Addr, Concurrency: 4, Messages: 100, MsgsPerConn: 10, To: "user@localhost", Size: 500,
		MaildirDir: s.Dir, MaildirExpect: 100, MaildirTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := res.Delivery
	if d == nil || !d.Complete || d.Found != 100 || d.Before != 0 || d.After < res.Elapsed {
		t.Fatalf("delivery %+v, elapsed %v; want 100 files found after sending", d, res.Elapsed)
	}

	// A second run expecting more than arrives gives up at its deadline
	// (here at once: only 10 were sent, and they are there).
	res, err = Send(testCtx(t), SendConfig{
		Addr: s.Addr, Messages: 10, To: "user@localhost",
		MaildirDir: filepath.Join(s.Dir, "new"), MaildirExpect: 1000, MaildirTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := res.Delivery; d.Complete || d.Before != 100 || d.Found != 110 {
		t.Errorf("delivery %+v; want incomplete, 100 before, 110 found", d)
	}
}

func TestSendConfigErrors(t *testing.T) {
	good := SendConfig{Addr: "127.0.0.1:1", Messages: 1, To: "u@localhost"}
	tests := []struct {
		name   string
		change func(*SendConfig)
		want   string
	}{
		{"no address", func(c *SendConfig) { c.Addr = "" }, "no server address"},
		{"no messages", func(c *SendConfig) { c.Messages = 0 }, "messages"},
		{"negative concurrency", func(c *SendConfig) { c.Concurrency = -1 }, "concurrency"},
		{"negative per session", func(c *SendConfig) { c.MsgsPerConn = -1 }, "per session"},
		{"no recipient", func(c *SendConfig) { c.To = "" }, "no recipient"},
		{"recipient with space", func(c *SendConfig) { c.To = "a b@c" }, "not allowed"},
		{"sender with CRLF", func(c *SendConfig) { c.From = "a@b\r\nRSET" }, "not allowed"},
		{"size 1", func(c *SendConfig) { c.Size = 1 }, "body size"},
		{"negative size", func(c *SendConfig) { c.Size = -5 }, "body size"},
		{"maildir without count", func(c *SendConfig) { c.MaildirDir = "/tmp" }, "expect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			_, err := Send(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNewEnvelope(t *testing.T) {
	for _, size := range []int{0, 2, 3, 79, 80, 81, 82, 159, 160, 161, 1024, 100000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			e, err := newEnvelope("a@b", "u@localhost", 2, size, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			data := e.data
			if !bytes.HasSuffix(data, []byte("\r\n.\r\n")) && !(size == 0 && bytes.HasSuffix(data, []byte("\r\n\r\n.\r\n"))) {
				t.Fatalf("data does not end in CRLF.CRLF: %q", data[max(0, len(data)-10):])
			}
			_, body, ok := bytes.Cut(data, []byte("\r\n\r\n"))
			if !ok {
				t.Fatal("no header/body separator")
			}
			body = bytes.TrimSuffix(body, []byte(".\r\n"))
			if len(body) != size {
				t.Errorf("body %d octets, want %d", len(body), size)
			}
			if e.octets() != len(data)-3 {
				t.Errorf("octets %d, want %d", e.octets(), len(data)-3)
			}
			for line := range bytes.Lines(data) {
				if !bytes.HasSuffix(line, []byte("\r\n")) || bytes.Count(line, []byte("\r")) != 1 || len(line) > 1000 {
					t.Fatalf("bad line %q", line)
				}
				if line[0] == '.' && string(line) != ".\r\n" {
					t.Fatalf("line needs dot-stuffing: %q", line)
				}
			}
			if want := "RCPT TO:<2u@localhost>\r\n"; string(e.rcpts[1]) != want {
				t.Errorf("second recipient %q, want %q", e.rcpts[1], want)
			}
		})
	}
}

func TestSendResultOutput(t *testing.T) {
	s := startSink(t, "-r", "RCPT")
	res, err := Send(testCtx(t), SendConfig{Addr: s.Addr, Messages: 5, To: "u@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	checkText(t, res, "messages   5: accepted 0, temp failures 5", "refused    RCPT 450: 5", "messages/s")
	var got struct {
		Mode     string         `json:"mode"`
		TempFail int            `json:"temp_fail"`
		Refusals map[string]int `json:"refusals"`
		Latency  map[string]any `json:"session_latency"`
	}
	if b := viaJSON(t, res, &got); got.Mode != "send" || got.TempFail != 5 || got.Refusals["RCPT 450"] != 5 || got.Latency["p99_ms"] == nil {
		t.Errorf("JSON %s", b)
	}
}

func BenchmarkSendSink(b *testing.B) {
	s := startSink(b)
	b.ReportAllocs()
	b.ResetTimer()
	res, err := Send(context.Background(), SendConfig{
		Addr: s.Addr, Concurrency: 4, Messages: b.N, MsgsPerConn: 100, Size: 1024,
		To: "user@localhost", Pipelining: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	if res.Accepted != b.N {
		b.Fatalf("accepted %d of %d", res.Accepted, b.N)
	}
	b.ReportMetric(res.MessagesPerSecond(), "msgs/s")
}

func TestDeliveryMessagesPerSecond(t *testing.T) {
	tests := []struct {
		d    Delivery
		want float64
	}{
		{Delivery{Expect: 100, Found: 100, Rcpts: 1, After: time.Second, Complete: true}, 100},
		{Delivery{Expect: 1000, Found: 1000, Rcpts: 10, After: time.Second, Complete: true}, 100},
		{Delivery{Expect: 150, Before: 50, Found: 150, Rcpts: 1, After: time.Second, Complete: true}, 100},
		{Delivery{Expect: 100, Found: 90, Rcpts: 1, After: time.Second}, 0},
	}
	for _, tt := range tests {
		if got := tt.d.MessagesPerSecond(); got != tt.want {
			t.Errorf("%+v: %v messages/s, want %v", tt.d, got, tt.want)
		}
	}
}

package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/mxguard/mxguard/internal/reply"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testcert"
)

// memHandler is a Handler that keeps messages in memory. Its policy is just
// enough to exercise the protocol: senders and recipients whose local part
// is "reject" are refused.
type memHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *memHandler) Mail(s *Session, from Path, size int64) *reply.Reply {
	if from.Local == "reject" {
		return &reply.Reply{Code: 550, Status: "5.7.1", Text: "Access denied"}
	}
	return nil
}

func (h *memHandler) Rcpt(s *Session, to Path) *reply.Reply {
	if to.Local == "reject" {
		return &reply.Reply{Code: 550, Status: "5.1.1", Text: "User unknown"}
	}
	return nil
}

func (h *memHandler) Data(s *Session, r io.Reader) *reply.Reply {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, string(b))
	return &reply.Reply{Code: 250, Status: "2.0.0", Text: fmt.Sprintf("Ok: queued as %d", len(h.msgs))}
}

func (h *memHandler) Reset(*Session) {}
func (h *memHandler) Close(*Session) {}

func (h *memHandler) messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}

// testServer runs srv on a loopback listener until the test ends.
func testServer(t *testing.T, cfg Config, h Handler, info ConnInfo) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.test"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	srv := NewServer(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			ci := info
			ci.Remote = netip.MustParseAddrPort(nc.RemoteAddr().String())
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.ServeConn(ctx, nc, ci, h)
			}()
		}
	}()
	return ln.Addr().String()
}

// resolved sets every phase left at 0 to t.Command.
func resolved(t Timeouts) Timeouts {
	for _, d := range []*time.Duration{&t.Helo, &t.Mail, &t.Rcpt, &t.DataInit, &t.DataBlock,
		&t.DataFinal, &t.Rset, &t.Quit, &t.Misc, &t.StartTLS} {
		if *d == 0 {
			*d = t.Command
		}
	}
	return t
}

// uniform is d for every wait.
func uniform(d time.Duration) Timeouts { return resolved(Timeouts{Command: d}) }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestTranscripts runs every file in testdata/transcripts: a conversation
// with the server, one step a line. A new case needs a new file, no code.
//
//	@key value   server setting before the first step: hostname, max_size,
//	             max_rcpts, bad_rcpt_throttle, greet_pause, timeout.<phase>,
//	             tls (any value), defer ("code status text"),
//	             max_session_bytes, max_session_time
//	C: text      the client sends text and CRLF
//	EHLO name    the client sends EHLO and reads the whole 250 reply
//	R: "quoted"  the client sends these exact bytes (Go string syntax)
//	FLOOD n "quoted"  the client sends these bytes n times over, and stops
//	             early without complaint if the server closes the connection
//	SLEEP d      the client waits d
//	S: prefix    the server's next reply line starts with prefix
//	CLOSED       the server has closed the connection
//	TLS          the client starts TLS (after S: 220 2.0.0)
//	TLS FAILS    the client tries to start TLS, and the handshake fails
//	MESSAGES n   the handler has stored n messages so far
//	MESSAGE i "quoted"  message i (from 1) is exactly this
//	ELAPSED >d   at least d has passed since the connection opened
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runTranscript(t, f)
		})
	}
}

func runTranscript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{MaxMessageSize: 1 << 20, Timeouts: Timeouts{Command: 5 * time.Second}}

	var info ConnInfo
	var steps []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, " "); ok && strings.HasPrefix(k, "@") {
			applySetting(t, &cfg, &info, k[1:], v)
			continue
		}
		steps = append(steps, line)
	}
	h := &memHandler{}
	// The phases a transcript leaves unset wait as long as command, as
	// the configuration resolves them (config.Timeouts.ServerSide).
	cfg.Timeouts = resolved(cfg.Timeouts)
	addr := testServer(t, cfg, h, info)
	start := time.Now()
	var nc net.Conn
	nc, err = net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	for i, step := range steps {
		verb, arg, _ := strings.Cut(step, " ")
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s step %d (%q): %s", filepath.Base(file), i+1, step, fmt.Sprintf(format, args...))
		}
		switch verb {
		case "C:":
			if _, err := io.WriteString(nc, arg+"\r\n"); err != nil {
				fail("write: %v", err)
			}
		case "R:":
			raw, err := strconv.Unquote(arg)
			if err != nil {
				fail("bad quoted string: %v", err)
			}
			if _, err := io.WriteString(nc, raw); err != nil {
				fail("write: %v", err)
			}
		case "S:":
			got, err := br.ReadString('\n')
			if err != nil {
				fail("read: %v (got %q)", err, got)
			}
			if !strings.HasSuffix(got, "\r\n") {
				fail("reply %q does not end in CRLF", got)
			}
			if !strings.HasPrefix(got, arg) {
				fail("got %q, want prefix %q", strings.TrimSpace(got), arg)
			}
		case "CLOSED":
			got, err := br.ReadString('\n')
			if err != io.EOF && !isReset(err) {
				fail("want closed connection, got %q, %v", got, err)
			}
		case "EHLO":
			// Shorthand: send EHLO and take the whole 250 reply.
			if _, err := io.WriteString(nc, "EHLO "+arg+"\r\n"); err != nil {
				fail("write: %v", err)
			}
			for {
				got, err := br.ReadString('\n')
				if err != nil || !strings.HasPrefix(got, "250") {
					fail("EHLO reply %q, %v", got, err)
				}
				if got[3] == ' ' {
					break
				}
			}
		case "FLOOD":
			ns, q, _ := strings.Cut(arg, " ")
			n, err := strconv.Atoi(ns)
			if err != nil {
				fail("bad count: %v", err)
			}
			raw, err := strconv.Unquote(q)
			if err != nil || raw == "" {
				fail("bad quoted string: %v", err)
			}
			// Batched, so that a flood of short strings is not a
			// system call each.
			batch := []byte(strings.Repeat(raw, max(1, min(n, 64<<10/max(len(raw), 1)))))
			for sent := 0; sent < n; sent += len(batch) / len(raw) {
				if _, err := nc.Write(batch[:min(len(batch), (n-sent)*len(raw))]); err != nil {
					if !isReset(err) && !errors.Is(err, syscall.EPIPE) {
						fail("write: %v", err)
					}
					break
				}
			}
		case "SLEEP":
			d, err := time.ParseDuration(arg)
			if err != nil {
				fail("bad duration")
			}
			time.Sleep(d)
		case "TLS":
			tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
			err := tc.Handshake()
			if arg == "FAILS" {
				if err == nil {
					fail("TLS handshake succeeded")
				}
				break
			}
			if err != nil {
				fail("TLS handshake: %v", err)
			}
			nc, br = tc, bufio.NewReader(tc)
		case "MESSAGES":
			want, _ := strconv.Atoi(arg)
			if got := len(h.messages()); got != want {
				fail("handler stored %d messages, want %d", got, want)
			}
		case "MESSAGE":
			is, q, _ := strings.Cut(arg, " ")
			i, _ := strconv.Atoi(is)
			want, err := strconv.Unquote(q)
			if err != nil {
				fail("bad quoted string: %v", err)
			}
			msgs := h.messages()
			if i < 1 || i > len(msgs) {
				fail("no message %d (have %d)", i, len(msgs))
			}
			if msgs[i-1] != want {
				fail("message %d is %q, want %q", i, msgs[i-1], want)
			}
		case "ELAPSED":
			d, err := time.ParseDuration(strings.TrimPrefix(arg, ">"))
			if err != nil {
				fail("bad duration")
			}
			if e := time.Since(start); e < d {
				fail("only %v elapsed", e)
			}
		default:
			fail("unknown step")
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func applySetting(t *testing.T, cfg *Config, info *ConnInfo, k, v string) {
	t.Helper()
	dur := func() time.Duration {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("@%s: %v", k, err)
		}
		return d
	}
	num := func() int {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("@%s: %v", k, err)
		}
		return n
	}
	to := &cfg.Timeouts
	switch k {
	case "hostname":
		cfg.Hostname = v
	case "max_size":
		cfg.MaxMessageSize = int64(num())
	case "max_rcpts":
		cfg.MaxRcpts = num()
	case "bad_rcpt_throttle":
		cfg.BadRcptThrottle = num()
	case "max_errors":
		cfg.MaxErrors = num()
	case "max_session_bytes":
		cfg.MaxSessionBytes = int64(num())
	case "max_session_time":
		cfg.MaxSessionTime = dur()
	case "greet_pause":
		info.GreetPause = dur()
	case "tls":
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{testcert.New(t, "mx.test")}}
	case "defer":
		code, rest, _ := strings.Cut(v, " ")
		status, text, _ := strings.Cut(rest, " ")
		n, _ := strconv.Atoi(code)
		info.Defer = &reply.Reply{Code: n, Status: status, Text: text}
	case "timeout.command":
		to.Command = dur()
	case "timeout.helo":
		to.Helo = dur()
	case "timeout.mail":
		to.Mail = dur()
	case "timeout.rcpt":
		to.Rcpt = dur()
	case "timeout.datainit":
		to.DataInit = dur()
	case "timeout.datablock":
		to.DataBlock = dur()
	case "timeout.datafinal":
		to.DataFinal = dur()
	case "timeout.rset":
		to.Rset = dur()
	case "timeout.quit":
		to.Quit = dur()
	case "timeout.misc":
		to.Misc = dur()
	case "timeout.starttls":
		to.StartTLS = dur()
	default:
		t.Fatalf("unknown setting @%s", k)
	}
}

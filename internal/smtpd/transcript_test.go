package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/mxguard/mxguard/internal/hold"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/smtptest"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

// testServer runs srv on a loopback listener until the test ends; setup,
// if any, runs on the Server before it serves.
func testServer(t *testing.T, cfg Config, h Handler, info ConnInfo, setup ...func(*Server)) string {
	t.Helper()
	return testServerHold(t, cfg, h, info, false, setup...)
}

// testServerHold is testServer, where early has the greeting pause held
// before the session (HoldGreeting) whenever it can be.
func testServerHold(t *testing.T, cfg Config, h Handler, info ConnInfo, early bool, setup ...func(*Server)) string {
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
	for _, f := range setup {
		f(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
		// A session resumed after a held greeting pause runs outside wg:
		// it is over (its log lines written) once untracked.
		for deadline := time.Now().Add(10 * time.Second); srv.Sessions() > 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%d sessions still open at the end", srv.Sessions())
				break
			}
		}
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
				if early && ci.Screen == nil && srv.HoldGreeting(nc, ci.Remote.Addr(), ci.GreetPause, func(nc net.Conn, held Held) {
					if nc != nil {
						ci.Held = held
						srv.ServeConn(ctx, nc, ci, h)
					}
				}) {
					return
				}
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
// with the protocol core (and memHandler), one step a line, played by
// internal/smtptest, whose doc lists the steps. A new case needs a new file,
// no code. Settings before the first step:
//
//	@key value   hostname, max_size, max_rcpts, bad_rcpt_throttle,
//	             max_bad_rcpts, greet_pause, timeout.<phase>, tls (any
//	             value), defer ("code status text"), max_session_bytes,
//	             max_session_time, max_errors, max_junk; stress.timeout,
//	             stress.max_errors, stress.max_junk, stress.greet_pause (the
//	             server is under stress from the start)
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runTranscript(t, f, nil, false)
		})
		// A greeting pause is played again with the Holder keeping the
		// session, without its goroutine: the client must see no difference.
		// held: by the session (as when it waits for a DNS list's
		// verdict first); early: before the session exists.
		if strings.Contains(name, "greet") {
			for _, early := range []bool{false, true} {
				t.Run(name+map[bool]string{false: "/held", true: "/early"}[early], func(t *testing.T) {
					t.Parallel()
					hd := startHolder(t)
					runTranscript(t, f, hd, early)
					if hd.Taken() == 0 {
						t.Error("the holder never held the session")
					}
					if hd.Len() != 0 {
						t.Errorf("%d connections still held", hd.Len())
					}
				})
			}
		}
	}
}

// startHolder runs a Holder until the test's end, and waits until it
// takes holds.
func startHolder(t *testing.T) *hold.Holder {
	t.Helper()
	hd := hold.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("holder: %v", err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); !hd.Running(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("holder never ran")
		}
	}
	return hd
}

func runTranscript(t *testing.T, file string, hd *hold.Holder, early bool) {
	cfg := Config{MaxMessageSize: 1 << 20, Timeouts: Timeouts{Command: 5 * time.Second}}
	var info ConnInfo
	var stress *Stress
	settings, steps := smtptest.Load(t, file)
	for _, kv := range settings {
		if name, ok := strings.CutPrefix(kv[0], "stress."); ok {
			if stress == nil {
				stress = &Stress{}
			}
			applyStress(t, stress, name, kv[1])
			continue
		}
		applySetting(t, &cfg, &info, kv[0], kv[1])
	}
	h := &memHandler{}
	cfg.Holder = hd
	// The phases a transcript leaves unset wait as long as command, as
	// the configuration resolves them (config.Timeouts.ServerSide).
	cfg.Timeouts = resolved(cfg.Timeouts)
	addr := testServerHold(t, cfg, h, info, early, func(srv *Server) { srv.SetStress(stress) })
	start := time.Now()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	smtptest.Play(t, filepath.Base(file), start, nc, steps, h.messages)
}

func applyStress(t *testing.T, st *Stress, k, v string) {
	t.Helper()
	var err error
	switch k {
	case "timeout":
		st.CommandTimeout, err = time.ParseDuration(v)
	case "greet_pause":
		st.GreetPause, err = time.ParseDuration(v)
	case "max_errors":
		st.MaxErrors, err = strconv.Atoi(v)
	case "max_junk":
		st.MaxJunk, err = strconv.Atoi(v)
	default:
		t.Fatalf("unknown setting @stress.%s", k)
	}
	if err != nil {
		t.Fatalf("@stress.%s: %v", k, err)
	}
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
	case "max_bad_rcpts":
		cfg.MaxBadRcpts = num()
	case "max_errors":
		cfg.MaxErrors = num()
	case "max_junk":
		cfg.MaxJunk = num()
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

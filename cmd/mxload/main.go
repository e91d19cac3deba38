// Command mxload puts SMTP servers under load, for mxguard's benchmarks and
// for comparing mxguard with Postfix on one machine. The work is done by
// package loadgen; this command only reads flags and prints results.
//
// Usage:
//
//	mxload [-mode send] -addr HOST:PORT [-c 20] [-n 1000] [-size 1024] [-rcpts 1]
//	       [-msgs-per-conn 1] [-from ADDR] [-to ADDR] [-ehlo NAME] [-pipelining] [-quit-nowait]
//	       [-bind 127.0.0.2-127.0.0.200] [-timeout 30s] [-json]
//	       [-wait-maildir DIR -expect N [-wait-timeout 1m]]
//	mxload -mode flood -addr HOST:PORT [-c 20 | -rate N [-max-outstanding 1000] [-engine net|epoll]] [-duration 10s]
//	       [-bind RANGE] [-json]
//	mxload -mode idle -addr HOST:PORT [-conns 10000] [-c 20] [-ehlo-first] [-hold 10s]
//	       [-interval 1s] [-pid PID | -pids PID,PID,...|PATTERN] [-bind RANGE] [-json]
//	mxload -mode abuse -addr HOST:PORT [-conns 2000] [-c 0] [-kind mix|header|data|command]
//	       [-max-size 1048576] [-line-max 4096] [-cap 67108864] [-from ADDR] [-to ADDR]
//	       [-pid PID | -pids PID,PID,...|PATTERN] [-bind RANGE] [-json]
//
// send delivers -n messages over -c concurrent sessions, -msgs-per-conn
// each (0: one long session per worker), and reports messages/s, MB/s
// (10⁶ octets of DATA payload, header included) and latency percentiles
// per message (MAIL to the reply after the final dot) and per session
// (connect to the QUIT reply; with -quit-nowait, to writing QUIT and
// closing without waiting for the reply, as Postfix's smtp client does by
// default). With -rcpts N the recipients are -to, then
// 2-to, 3-to ... N-to (user@localhost, 2user@localhost ...), as Postfix's
// smtp-source names them, so that one set of local users serves both
// tools. -size counts body octets after a four-line header, like
// smtp-source's -l. With -wait-maildir it then waits until -expect files
// exist in DIR/**/new/ and reports the time from the start of sending.
//
// flood connects for -duration, reads each first reply (answering a
// greeting with QUIT) and reports connections/s, refusals/s and replies by
// code. With -rate N it starts N connections a second on a fixed schedule
// (open loop), whatever the server answers, so that every server faces the
// same offered load; at most -max-outstanding are open at once, and a start
// due beyond that is dropped and counted; -engine epoll makes the
// connections with raw system calls on one goroutine (Linux), cheaper for
// the load core than Go's dialer, for floods of tens of thousands a second
// from one core. Without -rate, -c dialers each
// reconnect as soon as they have their reply (closed loop: a faster server
// gets a harder flood). Refusals/s counts the non-2xx replies that arrived
// while connections were being started, over that time. Connections are
// closed with SO_LINGER 0, so that they leave nothing in TIME_WAIT;
// otherwise ephemeral ports run out within seconds. Use -bind to spread
// clients over many loopback addresses too.
//
// idle opens -conns connections, holds them open and silent for -hold, and
// prints how many are still open every -interval. With -pid (for example
// mxguard's) or -pids (a list; cgroup:DIR, every process in that cgroup
// directory; or a pattern matched against process names such as
// '^(smtpd|master)$' for Postfix) it samples the processes' RSS
// and PSS before and during the hold and prints bytes per idle connection.
//
// abuse opens -conns sessions, -c at a time (0: all at once), and has
// each send an endless header line (after DATA), endless DATA or an
// endless command line (-kind; mix deals the three out in turn) in 16 KiB
// writes until the server closes the connection, or -cap octets are sent.
// Per kind it reports how many the server cut off and with which reply,
// the octets each got into the kernel before it learnt of the cut (what
// the server read plus what the socket buffers held), how far past the
// server's limit that was (-max-size for the DATA kinds, -line-max for the
// command line), and the time from the write that passed the limit to the
// close. With -pid or -pids it reports the CPU time (user+system) the
// server used during the run.
//
// mxload raises its own open-file limit to the hard limit at start.
// Results go to standard output, as text or with -json as one JSON object;
// progress and errors go to standard error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/internal/loadgen"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, logger)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "mxload:", err)
		os.Exit(2)
	case err != nil:
		logger.Error("mxload", "err", err)
		os.Exit(1)
	}
}

// usageError is a mistake in the command line.
type usageError struct{ error }

// A result is what every mode produces.
type result interface {
	WriteText(io.Writer) error
}

// run parses args, runs the chosen mode and prints its result on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, logger *slog.Logger) error {
	fs := flag.NewFlagSet("mxload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		mode     = fs.String("mode", "send", "`mode`: send, flood, idle or abuse")
		addr     = fs.String("addr", "127.0.0.1:2525", "server `host:port`")
		conc     = fs.Int("c", 20, "concurrent sessions (send), dialers (flood, and idle while opening)")
		bind     = fs.String("bind", "", "source `addresses`, round robin: 127.0.0.2-127.0.0.200, or a comma list")
		timeout  = fs.Duration("timeout", 30*time.Second, "limit for each connect and each reply")
		asJSON   = fs.Bool("json", false, "print the result as one JSON object")
		ehlo     = fs.String("ehlo", "mxload.localhost", "`name` to send with EHLO")
		n        = fs.Int("n", 1000, "send: messages in total")
		size     = fs.Int("size", 1024, "send: body `octets` per message, after the header")
		rcpts    = fs.Int("rcpts", 1, "send: recipients per message (to, 2to, 3to ... as smtp-source)")
		perConn  = fs.Int("msgs-per-conn", 1, "send: messages per session; 0 = one session per worker for all")
		from     = fs.String("from", "mxload@localhost", "send, abuse: envelope `sender`")
		to       = fs.String("to", "user@localhost", "send: first envelope `recipient`; abuse: the recipient")
		pipeline = fs.Bool("pipelining", false, "send: use PIPELINING when the server offers it")
		quitNW   = fs.Bool("quit-nowait", false, "send: send QUIT and close without waiting for its reply (as Postfix's smtp client)")
		maildir  = fs.String("wait-maildir", "", "send: after sending, wait for -expect files in `DIR`/**/new/")
		expect   = fs.Int("expect", 0, "send: files to wait for with -wait-maildir")
		waitFor  = fs.Duration("wait-timeout", time.Minute, "send: how long to wait for -wait-maildir")
		duration = fs.Duration("duration", 10*time.Second, "flood: how long to flood")
		rate     = fs.Float64("rate", 0, "flood: connections to start per second, open loop (0: -c dialers, closed loop)")
		maxOut   = fs.Int("max-outstanding", 1000, "flood with -rate: connections open at once at most")
		engine   = fs.String("engine", "net", "flood with -rate: `engine`, net (Go's dialer) or epoll (raw system calls on one goroutine, Linux)")
		conns    = fs.Int("conns", 10000, "idle: connections to open and hold; abuse: abusers (default 2000)")
		hold     = fs.Duration("hold", 10*time.Second, "idle: how long to hold them")
		interval = fs.Duration("interval", time.Second, "idle: how often to report")
		ehloFst  = fs.Bool("ehlo-first", false, "idle: wait for the greeting and send EHLO before falling silent")
		pid      = fs.Int("pid", 0, "idle: server process to measure (RSS and PSS); abuse: (CPU time)")
		pids     = fs.String("pids", "", "idle, abuse: server processes to measure: `PID,PID,...`, cgroup:DIR or a name pattern")
		kind     = fs.String("kind", "mix", "abuse: `kind` of endless input: header, data, command, or mix (all three in turn)")
		maxSize  = fs.Int64("max-size", 1<<20, "abuse: the server's max_message_size, in `octets`")
		lineMax  = fs.Int64("line-max", 4096, "abuse: the server's longest command line, in `octets`")
		abuseCap = fs.Int64("cap", 64<<20, "abuse: `octets` each abuser sends at most")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	pool, err := loadgen.ParseAddrs(*bind)
	if err != nil {
		return usageError{fmt.Errorf("-bind: %v", err)}
	}
	nofile, err := loadgen.RaiseNoFileLimit()
	if err != nil {
		logger.Warn("cannot raise the open-file limit", "err", err)
	}

	var procs *loadgen.ProcSet
	switch {
	case *pid != 0 && *pids != "":
		return usageError{errors.New("-pid and -pids exclude each other")}
	case *pid != 0:
		procs, err = loadgen.ParseProcs(strconv.Itoa(*pid))
	case *pids != "":
		procs, err = loadgen.ParseProcs(*pids)
	}
	if err != nil {
		return usageError{fmt.Errorf("-pids: %v", err)}
	}

	var res result
	switch *mode {
	case "send":
		r, e := loadgen.Send(ctx, loadgen.SendConfig{
			Addr: *addr, Concurrency: *conc, Messages: *n, Size: *size, Rcpts: *rcpts,
			MsgsPerConn: *perConn, From: *from, To: *to, EHLO: *ehlo, Pipelining: *pipeline, QuitNoWait: *quitNW,
			Bind: pool, Timeout: *timeout,
			MaildirDir: *maildir, MaildirExpect: *expect, MaildirTimeout: *waitFor,
		})
		if r != nil {
			res = r
		}
		err = e
	case "flood":
		if *rate != 0 && flagSet(fs, "c") {
			return usageError{errors.New("-c and -rate exclude each other: with -rate, -max-outstanding bounds the connections")}
		}
		if need := uint64(*maxOut) + 64; *rate != 0 && nofile != 0 && need > nofile {
			logger.Warn("open-file limit too low for -max-outstanding; raise the hard limit (ulimit -Hn)",
				"limit", nofile, "max_outstanding", *maxOut)
		}
		r, e := loadgen.Flood(ctx, loadgen.FloodConfig{
			Addr: *addr, Concurrency: *conc, Rate: *rate, MaxOutstanding: *maxOut, Engine: *engine,
			Duration: *duration, Bind: pool, Timeout: *timeout,
		})
		if r != nil {
			res = r
		}
		err = e
	case "idle":
		if need := uint64(*conns) + 64; nofile != 0 && need > nofile {
			logger.Warn("open-file limit too low for -conns; raise the hard limit (ulimit -Hn)",
				"limit", nofile, "conns", *conns)
		}
		r, e := loadgen.Idle(ctx, loadgen.IdleConfig{
			Addr: *addr, Conns: *conns, Concurrency: *conc, Bind: pool, EHLOFirst: *ehloFst,
			EHLO: *ehlo, Hold: *hold, Interval: *interval, Timeout: *timeout, Procs: procs,
			Progress: func(s loadgen.IdleSample) { fmt.Fprintln(stderr, s) },
		})
		if r != nil {
			res = r
		}
		err = e
	case "abuse":
		n := *conns
		if !flagSet(fs, "conns") {
			n = 2000
		}
		kinds := loadgen.AbuseKinds
		if *kind != "mix" {
			kinds = []loadgen.AbuseKind{loadgen.AbuseKind(*kind)}
		}
		if need := uint64(n) + 64; nofile != 0 && need > nofile {
			logger.Warn("open-file limit too low for -conns; raise the hard limit (ulimit -Hn)",
				"limit", nofile, "conns", n)
		}
		conc := *conc
		if !flagSet(fs, "c") {
			conc = 0 // all at once
		}
		r, e := loadgen.Abuse(ctx, loadgen.AbuseConfig{
			Addr: *addr, Abusers: n, Concurrency: conc, Kinds: kinds, Bind: pool, EHLO: *ehlo, From: *from, To: *to,
			MaxSize: *maxSize, LineMax: *lineMax, Cap: *abuseCap, Timeout: *timeout, Procs: procs,
		})
		if r != nil {
			res = r
		}
		err = e
	default:
		return usageError{fmt.Errorf("-mode %q: want send, flood, idle or abuse", *mode)}
	}
	if res == nil {
		return err
	}
	// A run can end with a result and an error (the Maildir could not be
	// read, the server process vanished): print what was measured, then
	// report the error.
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return errors.Join(enc.Encode(res), err)
	}
	return errors.Join(res.WriteText(stdout), err)
}

// flagSet reports whether the command line set the flag name, so that a
// mode can have its own default for a flag it shares.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// Command mxguard is an inbound SMTP server that keeps a mail host up while
// spam bots and botnets try to flood it. This file is only the command
// line; everything else lives in internal/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/doctor"
	"github.com/mxguard/mxguard/internal/logbuf"
	"github.com/mxguard/mxguard/internal/redisconn"
	"github.com/mxguard/mxguard/internal/sendmailimport"
	"github.com/mxguard/mxguard/internal/server"
	"github.com/mxguard/mxguard/internal/suggest"
)

const version = "0.1.0"

const usage = `usage:
  mxguard serve   [--config FILE]        run in the foreground; logs to stderr
  mxguard check   --config FILE          validate; exit 0 ok, 1 with every error listed
  mxguard doctor  --config FILE          check this host before going live; exit 1 on a FAIL
  mxguard import-sendmail --mc FILE [--access FILE] [--hosts-deny FILE]   TOML on stdout
  mxguard trust   [--config FILE] IP|CIDR|'a log line'   trust a client, live and persisted
  mxguard deny    [--config FILE] IP|CIDR|'a log line'   refuse a client, live and persisted
  mxguard reload  [--config FILE]        re-read the configuration (like SIGHUP)
  mxguard status  [--config FILE] [--json]   sessions, refusals by reason and the top offenders of the last minute
  mxguard bans    [--config FILE] [--json]   the bans of clients' scores in force
  mxguard unban   [--config FILE] IP|CIDR    lift the bans within a network
  mxguard ban     [--config FILE] [--for DURATION] IP|CIDR|'a log line'   refuse a client at connect for a while (default [reputation] ban_time)
  mxguard suggest [--config FILE] [--stats FILE | --log FILE...] [--day typical|all|DATE]
                                         limits and hosts.deny lines from the traffic, as a diff
  mxguard version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "check":
		return check(args, stdout, stderr)
	case "doctor":
		return doctorCmd(args, stdout, stderr)
	case "import-sendmail":
		return importSendmail(args, stdout, stderr)
	case "trust", "deny", "reload", "status", "bans", "unban":
		return controlCmd(cmd, args, stdout, stderr)
	case "ban":
		return banCmd(args, stdout, stderr)
	case "suggest":
		return suggestCmd(args, os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "mxguard", version, buildInfo())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mxguard: unknown command %q\n%s", cmd, usage)
	return 2
}

func buildInfo() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return bi.GoVersion
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mxguard "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// loadConfig reads path, or returns the defaults when path is "".
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// minProcs is the fewest Ps (GOMAXPROCS) the server runs with in relay
// mode, even on one core. The spool's group committer blocks in fdatasync
// holding its P, and the runtime hands a P in a system call to another
// thread only when goroutines wait in that P's run queue, not when they
// wait in the network poller, as every session between two commands does.
// With one P a whole fdatasync passed with no session read: the next group
// commit found almost nothing waiting, and relay mode pinned to one core
// committed 0.5 to 1.8 fsyncs a message at 1,500 to 4,600 msgs/s, where a
// second P gave 0.15 at 6,000 (BENCHMARKS.md, "Relay mode on one core").
// The kernel still shares the one core between the two. Local delivery
// keeps the runtime's choice: its fsyncs are the sessions' own, and under
// a flood a second P cost about 2% in refusals per CPU-second.
const minProcs = 2

// atLeastProcs raises GOMAXPROCS to n unless it is that already or the
// operator set it (the GOMAXPROCS environment variable).
func atLeastProcs(n int) {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
}

func serve(args []string, stderr io.Writer) int {
	fs := flags("serve", stderr)
	path := fs.String("config", "", "configuration file (TOML); defaults serve localhost on 127.0.0.1:2525")
	debugLog := fs.Bool("debug", false, "log debug messages too")
	if fs.Parse(args) != nil {
		return 2
	}
	level := slog.LevelInfo
	if *debugLog {
		level = slog.LevelDebug
	}
	// Log lines are batched for a few milliseconds: under a flood there is
	// one per refused connection.
	out := logbuf.New(stderr, 20*time.Millisecond)
	defer out.Flush()
	fail := func(err error) int {
		out.Flush() // the warnings before the error, in order
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	cfg := config.NoFile()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return fail(err)
		}
	}
	if cfg.Delivery.Relay != "" {
		// The spool's committer is on the path of every 250 (minProcs).
		atLeastProcs(minProcs)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(out, opts)
	if cfg.LogFormat == config.LogJSON {
		h = slog.NewJSONHandler(out, opts)
	}
	log := slog.New(h)
	redis.SetLogger(redisconn.Logger{Log: log})
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	// Before anything is made at a configured path: a file where data_dir
	// should be, or a directory where the control socket goes, is an
	// error with its line, never something to create over or remove.
	if errs := cfg.CheckPaths(); len(errs) > 0 {
		return fail(errs)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fail(cfg.KeyError("data_dir", err))
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		return fail(err)
	}
	if err := srv.Listen(); err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			srv.Reload() // logs its own outcome; a broken file keeps the old settings
		}
	}()
	log.Info("mxguard starting", "version", version, "hostname", cfg.Hostname, "data_dir", cfg.DataDir)
	if err := srv.Run(ctx); err != nil {
		log.Error("mxguard stopped with an error", "err", err.Error())
		return 1
	}
	return 0
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := flags("check", stderr)
	path := fs.String("config", "", "configuration file (TOML)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "mxguard check: --config FILE is required")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	// The files the configuration names are part of it: check them too.
	warnings, err := server.Check(cfg)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

func doctorCmd(args []string, stdout, stderr io.Writer) int {
	fs := flags("doctor", stderr)
	path := fs.String("config", "", "configuration file (TOML)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "mxguard doctor: --config FILE is required")
		return 2
	}
	// The report says what failed; go-redis's own lines would only
	// interleave with it.
	redis.SetLogger(redisconn.Logger{Log: slog.New(slog.DiscardHandler)})
	// Ctrl-C ends the checks, which then remove what they made in data_dir.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if doctor.Run(ctx, *path, stdout) {
		return 1
	}
	return 0
}

func importSendmail(args []string, stdout, stderr io.Writer) int {
	fs := flags("import-sendmail", stderr)
	mc := fs.String("mc", "", "sendmail.mc to translate")
	access := fs.String("access", "", "sendmail access file (referenced, kept in its own format)")
	hostsDeny := fs.String("hosts-deny", "", "hosts.deny file (referenced, kept in its own format)")
	if fs.Parse(args) != nil {
		return 2
	}
	if *mc == "" {
		fmt.Fprintln(stderr, "mxguard import-sendmail: --mc FILE is required")
		return 2
	}
	f, err := os.Open(*mc)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	defer f.Close()
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	out, untranslated, err := sendmailimport.Translate(f, abs(*access), abs(*hostsDeny))
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	stdout.Write(out)
	for _, u := range untranslated {
		fmt.Fprintln(stderr, u)
	}
	return 0
}

func controlCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flags(cmd, stderr)
	path := fs.String("config", "", "configuration file, to find the control socket and the trust/deny files")
	asJSON := fs.Bool("json", false, "status: print the figures as JSON")
	if fs.Parse(args) != nil {
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	if cmd == "unban" {
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "mxguard unban: give one IP address or CIDR prefix")
			return 2
		}
		p, err := control.ParsePrefix(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "mxguard unban: %v\n", err)
			return 1
		}
		out, err := control.Send(cfg.Control, "unban "+p.String(), 10*time.Second)
		if err != nil {
			fmt.Fprintf(stderr, "mxguard unban: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, out)
		return 0
	}
	if cmd != "trust" && cmd != "deny" {
		out, err := control.Send(cfg.Control, cmd, 10*time.Second)
		if err != nil {
			fmt.Fprintf(stderr, "mxguard %s: %v\n", cmd, err)
			return 1
		}
		format := map[string]func(io.Writer, string) error{"status": server.FormatStatus, "bans": server.FormatBans}[cmd]
		if format != nil && !*asJSON {
			if err := format(stdout, out); err != nil {
				fmt.Fprintf(stderr, "mxguard %s: %v\n", cmd, err)
				return 1
			}
			return 0
		}
		fmt.Fprintln(stdout, out)
		return 0
	}
	switch fs.NArg() {
	case 0:
		fmt.Fprintf(stderr, "mxguard %s: give an IP, a CIDR prefix or a log line\n", cmd)
		return 2
	case 1:
	default:
		// Unquoted, the shell splits a log line and drops its quotes, and
		// the quotes decide which text is a field and which is message.
		fmt.Fprintf(stderr, "mxguard %s: %d arguments; give one: an IP, a CIDR prefix, or a whole log line in single quotes\n", cmd, fs.NArg())
		return 2
	}
	t, err := control.ParseTarget(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "mxguard %s: %v\n", cmd, err)
		return 1
	}
	fmt.Fprintln(stdout, t)
	out, err := control.Send(cfg.Control, cmd+" "+t.Prefix.String(), 10*time.Second)
	switch {
	case errors.Is(err, control.ErrNotRunning):
		// Nobody to tell: write the file so the next start picks it up.
		msg, perr := server.PersistPrefix(cfg, t.Prefix, cmd == "trust")
		if perr != nil {
			fmt.Fprintf(stderr, "mxguard %s: %v; and the %s file could not be written: %v\n", cmd, err, cmd, perr)
			return 1
		}
		fmt.Fprintf(stdout, "%s (server not running: takes effect when it starts)\n", msg)
		return 0
	case errors.Is(err, control.ErrPermission):
		// A server may well be running: writing its file behind its back
		// would not change it, and a later reload would pick up what the
		// operator was told had failed.
		fmt.Fprintf(stderr, "mxguard %s: %v; nothing was changed\n", cmd, err)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "mxguard %s: %v\n", cmd, err)
		return 1
	}
	fmt.Fprintln(stdout, out)
	return 0
}

// banCmd is `mxguard ban`: a ban of the running server's, until it expires
// (or `mxguard unban`). The flags may follow the target, as an operator
// types them: mxguard ban 192.0.2.7 --for 1d.
func banCmd(args []string, stdout, stderr io.Writer) int {
	fs := flags("ban", stderr)
	path := fs.String("config", "", "configuration file, to find the control socket")
	forArg := fs.String("for", "", "how long the ban lasts, e.g. 1h or 7d (default: [reputation] ban_time)")
	if fs.Parse(args) != nil {
		return 2
	}
	var targets []string
	for fs.NArg() > 0 {
		targets = append(targets, fs.Arg(0))
		if fs.Parse(fs.Args()[1:]) != nil {
			return 2
		}
	}
	if len(targets) != 1 {
		fmt.Fprintf(stderr, "mxguard ban: %d arguments; give one: an IP, a CIDR prefix, or a whole log line in single quotes\n", len(targets))
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	d := cfg.Reputation.BanTime
	if *forArg != "" {
		if d, err = config.ParseDuration(*forArg); err != nil || d <= 0 {
			fmt.Fprintf(stderr, "mxguard ban: --for %s: give a positive duration such as 1h or 7d\n", *forArg)
			return 2
		}
	}
	t, err := control.ParseTarget(targets[0])
	if err != nil {
		fmt.Fprintf(stderr, "mxguard ban: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, t)
	out, err := control.Send(cfg.Control, fmt.Sprintf("ban %s %s", d, t.Prefix), 10*time.Second)
	if err != nil {
		if errors.Is(err, control.ErrNotRunning) {
			err = fmt.Errorf("%w; a ban lives in the running server, so nothing was changed", err)
		}
		fmt.Fprintf(stderr, "mxguard ban: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, out)
	return 0
}

// suggestCmd is `mxguard suggest`: limits and hosts.deny lines proposed
// from the recorded traffic or from logs, printed as a diff.
func suggestCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flags("suggest", stderr)
	o := suggest.Defaults()
	in := suggest.Input{Stdin: stdin}
	fs.StringVar(&in.ConfigPath, "config", "", "configuration file (TOML) to propose changes to, with its access map and hosts.deny")
	fs.StringVar(&in.StatsPath, "stats", "", "the server's statistics (default <data_dir>/stats.json)")
	fs.Func("log", "a log file of mxguard's or sendmail's (syslog) to read instead of the statistics; again for more, oldest first; - is standard input",
		func(s string) error { in.Logs = append(in.Logs, s); return nil })
	fs.StringVar(&o.Day, "day", "typical", "the day the limits come from: typical (the median day), all, or YYYY-MM-DD")
	pct := func(name string, q *float64, usage string) {
		fs.Func(name, fmt.Sprintf("%s (default %g)", usage, *q*100), func(s string) error {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || v <= 0 || v > 100 {
				return errors.New("a percentile above 0, at most 100")
			}
			*q = v / 100
			return nil
		})
	}
	pct("children-percentile", &o.ChildrenPercentile, "max_daemon_children: the percentile of the sessions open")
	fs.Int64Var(&o.ChildrenFactor, "children-factor", o.ChildrenFactor, "max_daemon_children: times the percentile")
	fs.Int64Var(&o.ChildrenMin, "children-min", o.ChildrenMin, "max_daemon_children: never below")
	pct("throttle-percentile", &o.ThrottlePercentile, "connection_rate_throttle: the percentile of the connections a second")
	fs.Int64Var(&o.ThrottleFactor, "throttle-factor", o.ThrottleFactor, "connection_rate_throttle: times the percentile")
	fs.Int64Var(&o.ThrottleMin, "throttle-min", o.ThrottleMin, "connection_rate_throttle: never below")
	pct("client-percentile", &o.ClientPercentile, "client_rate, client_conn: the percentile of the delivering clients'")
	fs.Float64Var(&o.ClientMargin, "client-margin", o.ClientMargin, "client_rate, client_conn: times the percentile, rounded up")
	fs.Int64Var(&o.MinClientRate, "min-client-rate", o.MinClientRate, "client_rate: never below")
	fs.Int64Var(&o.MinClientConn, "min-client-conn", o.MinClientConn, "client_conn: never below")
	fs.Int64Var(&o.DenyMinRefusals, "deny-min-refusals", o.DenyMinRefusals, "hosts.deny: refusals a network or suffix drew, at least")
	fs.IntVar(&o.DenyTop, "deny-top", o.DenyTop, "hosts.deny: at most this many networks, and as many suffixes")
	if fs.Parse(args) != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxguard suggest: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if in.StatsPath != "" && len(in.Logs) > 0 {
		fmt.Fprintln(stderr, "mxguard suggest: give --stats or --log, not both")
		return 2
	}
	in.Options = o
	if err := suggest.Run(stdout, in); err != nil {
		fmt.Fprintf(stderr, "mxguard suggest: %v\n", err)
		return 1
	}
	return 0
}

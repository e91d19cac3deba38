// Package doctor checks a host before mxguard goes live on it and says what
// it found, with figures: `mxguard doctor --config FILE`.
//
// mxguard answers 250 only once a message is fsynced, so the disk under
// data_dir bounds how many messages a second it can take, whatever the CPU:
// a RAID controller without a safe write-back cache turns every fsync into
// a wait for the platters (the seed's admin saw a 2-minute untar take 6).
// Such things are found before the first flood, not during it: each check
// here measures or tries the real thing (binds the listen addresses, times
// reverse lookups through the configured resolver, fsyncs files in
// data_dir, pings Redis, greets the relay target) and reports one Finding
// a line.
//
// Each check is one function returning its findings, so that it can be
// tested alone; Run runs them all in order for the command.
package doctor

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/config"
)

// Level is how bad a finding is.
type Level int

const (
	// OK: nothing to do.
	OK Level = iota
	// Warn: mxguard runs, but worse than it could; the text says what to
	// change.
	Warn
	// Fail: mxguard cannot run, or cannot keep its promises, as things
	// are; `mxguard doctor` exits 1.
	Fail
)

func (l Level) String() string {
	switch l {
	case OK:
		return "ok"
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	}
	return "Level(" + strconv.Itoa(int(l)) + ")"
}

// The names of the checks, as printed after the level. They are part of
// the output's contract (docs/SPEC.md): scripts grep for them.
const (
	CheckConfig = "config"
	CheckListen = "listen"
	CheckDNS    = "dns"
	CheckFsync  = "fsync"
	CheckSpace  = "space"
	CheckInodes = "inodes"
	CheckNofile = "nofile"
	CheckRedis  = "redis"
	CheckRelay  = "relay"
)

// Finding is one thing a check found: one line of the report.
type Finding struct {
	Level Level
	Check string // one of the Check* names
	Text  string // one line
}

// String is the report's line: the level in four columns, the check's
// name, a colon and the text, e.g.
//
//	ok   fsync: on /var/lib/mxguard (ext4), 200 samples: file fsync p50 0.41 ms, ...
func (f Finding) String() string {
	return fmt.Sprintf("%-4s %s: %s", f.Level, f.Check, f.Text)
}

func finding(l Level, check, format string, args ...any) Finding {
	return Finding{Level: l, Check: check, Text: fmt.Sprintf(format, args...)}
}

// lines makes one finding of each line of text, for multi-line errors
// (config.Errors, errors.Join) that must stay one finding a line.
func lines(l Level, check, text string) []Finding {
	var out []Finding
	for _, s := range strings.Split(text, "\n") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, Finding{Level: l, Check: check, Text: s})
		}
	}
	return out
}

// Run checks the configuration file at path and this host, writing each
// finding to w as soon as its check ends, then a summary line:
//
//	summary: 9 ok, 1 WARN, 0 FAIL
//
// It reports whether any finding is a Fail. When the file does not load,
// only the config check runs: the others need its values. When ctx ends
// (the operator pressed Ctrl-C) the checks stop, having removed what they
// made, and that is a Fail.
func Run(ctx context.Context, path string, w io.Writer) (failed bool) {
	var count [3]int
	emit := func(fs []Finding) {
		for _, f := range fs {
			count[f.Level]++
			fmt.Fprintln(w, f)
		}
	}
	cfg, fs := Config(path)
	emit(fs)
	if cfg != nil {
		for _, check := range []func() []Finding{
			func() []Finding { return Listen(listenAddrs(cfg)) },
			func() []Finding { return DNS(ctx, cfg.Resolver, DNSAddrs(cfg)) },
			func() []Finding { return Fsync(ctx, cfg.DataDir, SyncSamples, SyncBudget) },
			func() []Finding { return Space(cfg.DataDir) },
			func() []Finding { return Nofile(cfg) },
			func() []Finding { return Redis(ctx, cfg.Fleet) },
			func() []Finding { return Relay(ctx, cfg) },
		} {
			if ctx.Err() != nil {
				emit([]Finding{finding(Fail, "doctor", "interrupted: not every check ran")})
				break
			}
			emit(check())
		}
	}
	fmt.Fprintf(w, "summary: %d ok, %d WARN, %d FAIL\n", count[OK], count[Warn], count[Fail])
	return count[Fail] > 0
}

// ms formats d in milliseconds, the unit every latency here is read in.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 0.1:
		return strconv.FormatFloat(v, 'f', 3, 64) + " ms"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	}
	return group(int64(v+0.5)) + " ms"
}

// group writes n with a comma every three digits: 2,400.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// bytesText writes n in the largest binary unit that keeps it at 1 or
// more: 1.5 GiB.
func bytesText(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatUint(n, 10) + " B"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, which must not be empty: the smallest value that at least p % of
// the values are at or below.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (len(sorted)*p + 99) / 100 // ceil(n × p / 100), in integers
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// listenAddrs are the addresses serve binds: listen, and [admin] listen.
func listenAddrs(cfg *config.Config) []string {
	addrs := slices.Clone(cfg.Listen)
	if cfg.Admin.Listen != "" {
		addrs = append(addrs, cfg.Admin.Listen)
	}
	return addrs
}

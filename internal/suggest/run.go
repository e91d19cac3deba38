package suggest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/stats"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// Input is what `mxguard suggest` was asked.
type Input struct {
	ConfigPath string    // "" : the defaults, and a new mxguard.toml in the working directory
	StatsPath  string    // "" : <data_dir>/stats.json
	Logs       []string  // log files to read instead of the statistics; "-" is Stdin
	Stdin      io.Reader // for "-"
	Options    Options
	Log        LogOptions // the Window is the configuration's
}

// Run reads the configuration, its files and the traffic (the server's
// statistics, or logs), and writes the proposals as a diff to w.
func Run(w io.Writer, in Input) error {
	f, cfg, err := readFiles(in.ConfigPath)
	if err != nil {
		return err
	}
	cur, err := current(cfg, f)
	if err != nil {
		return err
	}
	var days []stats.Day
	var source string
	if len(in.Logs) > 0 {
		days, source, err = readLogFiles(in, cfg.Limits.ConnectionRateWindowSize)
	} else {
		days, source, err = readStats(in.StatsPath, cfg)
	}
	if err != nil {
		return err
	}
	res, err := Suggest(days, cur, in.Options)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	return Render(w, res, f, source)
}

func readFiles(path string) (Files, *config.Config, error) {
	var f Files
	cfg := config.Default()
	if path == "" {
		abs, err := filepath.Abs("mxguard.toml")
		if err != nil {
			return f, nil, err
		}
		if _, err := os.Stat(abs); err == nil {
			return f, nil, fmt.Errorf("no --config given, and %s exists: give it with --config", abs)
		}
		f.ConfigPath = abs
	} else {
		c, err := config.Load(path)
		if err != nil {
			return f, nil, err
		}
		cfg = c
		if f.ConfigPath, err = filepath.Abs(path); err != nil {
			return f, nil, err
		}
		if f.Config, err = os.ReadFile(path); err != nil {
			return f, nil, err
		}
		f.ConfigExists, f.Cfg = true, cfg
	}
	if cfg.AccessMap != "" {
		b, err := os.ReadFile(cfg.AccessMap)
		if err != nil {
			return f, nil, cfg.KeyError("access_map", err)
		}
		f.Access = b
		if f.AccessPath, err = filepath.Abs(cfg.AccessMap); err != nil {
			return f, nil, err
		}
	}
	f.DenyConfigured = cfg.HostsDeny != ""
	deny := cfg.HostsDeny
	if deny == "" {
		// A new hosts.deny beside the configuration.
		deny = filepath.Join(filepath.Dir(f.ConfigPath), "hosts.deny")
	}
	var err error
	if f.DenyPath, err = filepath.Abs(deny); err != nil {
		return f, nil, err
	}
	switch b, err := os.ReadFile(f.DenyPath); {
	case err == nil:
		f.Deny, f.DenyExists = b, true
	case errors.Is(err, fs.ErrNotExist) && !f.DenyConfigured:
	default:
		return f, nil, cfg.KeyError("hosts_deny", err)
	}
	return f, cfg, nil
}

// current is what the configuration and its files set now.
func current(cfg *config.Config, f Files) (Current, error) {
	l := cfg.Limits
	cur := Current{
		MaxDaemonChildren:      int64(l.MaxDaemonChildren),
		ConnectionRateThrottle: int64(l.ConnectionRateThrottle),
		ClientRate:             int64(l.ClientRate),
		ClientConn:             int64(l.ClientConn),
		Window:                 l.ConnectionRateWindowSize,
		Trusted:                cfg.TrustedNetworks,
	}
	if f.AccessPath != "" {
		m, err := accessmap.Parse(bytes.NewReader(f.Access), cfg.AccessMap)
		if err != nil {
			return cur, err
		}
		for e := range m.All() {
			if e.Key != "" {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(e.Value), 10, 64)
			if err != nil {
				continue // the parser has checked it; SKIP and the like
			}
			switch e.Tag {
			case accessmap.TagClientRate:
				cur.ClientRate, cur.ClientRateInAccess = n, true
			case accessmap.TagClientConn:
				cur.ClientConn, cur.ClientConnInAccess = n, true
			}
		}
	}
	allow := cfg.HostsAllow
	var denyR io.Reader
	if f.DenyExists {
		denyR = bytes.NewReader(f.Deny)
	}
	var allowR io.Reader
	if allow != "" {
		b, err := os.ReadFile(allow)
		if err != nil {
			return cur, cfg.KeyError("hosts_allow", err)
		}
		allowR = bytes.NewReader(b)
	}
	t, err := tcpwrap.Parse(allowR, denyR, allow, f.DenyPath)
	if err != nil {
		return cur, err
	}
	cur.Wrappers = t
	return cur, nil
}

func readStats(path string, cfg *config.Config) ([]stats.Day, string, error) {
	if path == "" {
		path = filepath.Join(cfg.DataDir, stats.FileName)
	}
	days, err := stats.Load(path)
	if err != nil {
		return nil, "", err
	}
	if len(days) == 0 {
		return nil, "", fmt.Errorf("no traffic statistics at %s: the server writes them every %v and when it stops; or read logs with --log", path, 5*time.Minute)
	}
	return days, "the server's statistics in " + path, nil
}

func readLogFiles(in Input, window time.Duration) ([]stats.Day, string, error) {
	var rs []io.Reader
	for _, name := range in.Logs {
		if name == "-" {
			if in.Stdin == nil {
				return nil, "", errors.New("--log -: no standard input")
			}
			rs = append(rs, in.Stdin)
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			return nil, "", err
		}
		defer f.Close()
		rs = append(rs, f)
	}
	opts := in.Log
	opts.Window = window
	days, rep, err := ReadLogs(rs, opts)
	if err != nil {
		return nil, "", err
	}
	source := fmt.Sprintf("the logs %s (%s)", strings.Join(in.Logs, ", "), rep)
	if len(days) == 0 {
		return nil, "", fmt.Errorf("%s: no line of mxguard's or sendmail's about a client", source)
	}
	return days, source, nil
}

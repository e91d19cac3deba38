package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/admit"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/recipients"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// Check runs every check of cfg that reads the disk, as `mxguard check`
// and the start of `serve` do: the kind of each path the configuration
// names, the files it names (access map, TCP-wrappers files, trust and
// deny lists, recipients and aliases) and the STARTTLS key pair. It
// reports every problem, each with the file and line it comes from, and
// the warnings.
func Check(cfg *config.Config) (warnings []string, err error) {
	l, err := load(cfg)
	if l != nil {
		warnings = l.warnings
	}
	return warnings, err
}

// loaded is what a configuration names on disk, read at start and at each
// reload.
type loaded struct {
	admit      *admit.Policy
	recipients *recipients.Table // nil: no recipients or aliases file
	tls        *tls.Config
	warnings   []string
}

// load reads everything cfg names from disk. Every problem is reported at
// once; any error leaves the caller with what it had, so a broken file
// never replaces a good one.
func load(cfg *config.Config) (*loaded, error) {
	if errs := cfg.CheckPaths(); len(errs) > 0 {
		// The files are of the wrong kind: reading them would only add
		// confusing errors about the same mistake.
		return nil, errs
	}
	l := &loaded{}
	var errs []error
	p, warnings, err := LoadPolicy(cfg)
	l.admit, l.warnings = p, warnings
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.Admin.Console {
		if _, err := consoleToken(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if r := cfg.Recipients; r.File != "" || r.Aliases != "" {
		t, err := recipients.Load(r.File, r.Aliases, cfg.LocalDomains, cfg.Delivery.Relay != "")
		if err != nil {
			errs = append(errs, err)
		} else {
			l.recipients = t
			l.warnings = append(l.warnings, t.Warnings()...)
		}
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			errs = append(errs, cfg.KeyError("tls_cert", fmt.Errorf("with tls_key %s: %w", cfg.TLSKey, err)))
		} else {
			l.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
	}
	if len(errs) > 0 {
		return l, errors.Join(errs...)
	}
	return l, nil
}

// LoadPolicy reads every file admission depends on. Any error leaves the
// caller with the policy it had: a broken file never replaces a good one.
func LoadPolicy(cfg *config.Config) (*admit.Policy, []string, error) {
	p := &admit.Policy{Hostname: cfg.Hostname, Limits: cfg.Limits, NoFCrDNSPoints: cfg.Reputation.NoFCrDNSPoints,
		DNSBL: cfg.DNSBL, StressDNSBLReject: cfg.Stress.DNSBLReject}
	var warnings []string
	var errs []error
	p.Trusted = append(p.Trusted, cfg.TrustedNetworks...)
	if extra, err := readPrefixFile(cfg.TrustFile); err != nil {
		errs = append(errs, err)
	} else {
		p.Trusted = append(p.Trusted, extra...)
	}
	if denied, err := readPrefixFile(cfg.DenyFile); err != nil {
		errs = append(errs, err)
	} else {
		p.Denied = denied
	}
	if cfg.AccessMap != "" {
		m, err := accessmap.Load(cfg.AccessMap)
		if err == nil {
			err = checkAccessNumbers(m)
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			p.Access = m
			warnings = append(warnings, m.Warnings()...)
		}
	}
	if cfg.HostsAllow != "" || cfg.HostsDeny != "" {
		t, err := tcpwrap.Load(cfg.HostsAllow, cfg.HostsDeny)
		if err != nil {
			errs = append(errs, err)
		} else {
			p.Wrappers = t
			warnings = append(warnings, t.Warnings()...)
		}
	}
	return p, warnings, errors.Join(errs...)
}

// checkAccessNumbers refuses ClientRate: values the limiter cannot count,
// which would otherwise load and then turn every matching client away
// with a temporary failure.
func checkAccessNumbers(m *accessmap.Map) error {
	var errs []error
	for e := range m.All() {
		if e.Tag != accessmap.TagClientRate {
			continue
		}
		if n, err := strconv.Atoi(e.Value); err == nil && n > limit.MaxRateLimit {
			errs = append(errs, &accessmap.LineError{File: m.Name(), Line: e.Line,
				Err: fmt.Errorf("%s: %d is more than the largest supported rate, %d", e, n, limit.MaxRateLimit)})
		}
	}
	return errors.Join(errs...)
}

// readPrefixFile reads a list of networks kept by `mxguard trust` and
// `mxguard deny`: one address or CIDR prefix a line, '#' comments. A file
// that does not exist yet is an empty list.
func readPrefixFile(path string) ([]netip.Prefix, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Prefix
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		p, err := control.ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: not an address or CIDR prefix: %q", path, n, line)
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// appendPrefix adds p to a trust or deny file durably, unless it is
// already listed.
func appendPrefix(path string, p netip.Prefix, comment string) (added bool, err error) {
	n, err := appendPrefixes(path, []netip.Prefix{p}, func(netip.Prefix) string { return comment })
	return n > 0, err
}

// appendPrefixes adds to the file at path those of ps it lacks, each with
// its comment, in one write and one fsync, and returns how many it added.
func appendPrefixes(path string, ps []netip.Prefix, comment func(netip.Prefix) string) (int, error) {
	have, err := readPrefixFile(path)
	if err != nil {
		return 0, err
	}
	seen := make(map[netip.Prefix]bool, len(have)+len(ps))
	for _, h := range have {
		seen[h] = true
	}
	var b strings.Builder
	n := 0
	for _, p := range ps {
		if seen[p] {
			continue
		}
		seen[p] = true
		fmt.Fprintf(&b, "%s # %s\n", p, comment(p))
		n++
	}
	if n == 0 {
		return 0, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// PersistPrefix records p in the trust (or deny) file without a running
// server; it takes effect at the next start or reload.
func PersistPrefix(cfg *config.Config, p netip.Prefix, trust bool) (string, error) {
	file, verb := cfg.DenyFile, "denied"
	if trust {
		file, verb = cfg.TrustFile, "trusted"
	}
	added, err := appendPrefix(file, p, verb+" "+time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return "", err
	}
	if !added {
		return fmt.Sprintf("%s was already %s (%s)", p, verb, file), nil
	}
	return fmt.Sprintf("%s %s (saved in %s)", verb, p, file), nil
}

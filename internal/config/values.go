package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const day = 24 * time.Hour

// ParseDuration parses a duration in Go's syntax ("30s", "1m", "1h30m",
// "250ms") extended with a leading day count ("5d", "1d12h"), since queue
// lifetimes are naturally counted in days. Negative durations are errors:
// no timeout or limit in mxguard has a meaning for them.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New(`empty duration; use e.g. "30s", "5m", "1h" or "5d"`)
	}
	if s[0] == '-' {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	rest := strings.TrimPrefix(s, "+")
	var days time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		n, err := strconv.ParseUint(rest[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q; use e.g. \"5d\" or \"1d12h\"", s)
		}
		if n > uint64(math.MaxInt64/int64(day)) {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		days = time.Duration(n) * day
		rest = rest[i+1:]
		if rest == "" {
			return days, nil
		}
		if rest[0] == '-' || rest[0] == '+' {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q; use e.g. \"30s\", \"5m\", \"1h30m\" or \"5d\"", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	if d > math.MaxInt64-days {
		return 0, fmt.Errorf("duration %q is too long", s)
	}
	return days + d, nil
}

// FormatDuration formats d so that ParseDuration reads it back, in the
// shortest natural form: "30s", "1m", "1h30m", "5d", "1d12h".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	if d < 0 {
		// Not produced by ParseDuration, but format it faithfully.
		return d.String()
	}
	if days := d / day; days > 0 {
		b.WriteString(strconv.FormatInt(int64(days), 10))
		b.WriteByte('d')
		d -= days * day
	}
	if d%time.Second != 0 {
		b.WriteString(d.String())
		return b.String()
	}
	for _, u := range []struct {
		unit time.Duration
		name byte
	}{{time.Hour, 'h'}, {time.Minute, 'm'}, {time.Second, 's'}} {
		if n := d / u.unit; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteByte(u.name)
			d -= n * u.unit
		}
	}
	return b.String()
}

// sizeUnits are the suffixes ParseSize accepts, compared without regard to
// case. Decimal and binary prefixes are both offered because operators copy
// values from documentation that uses either.
var sizeUnits = []struct {
	name string
	mult int64
}{
	{"b", 1},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
}

// ParseSize parses a byte count: a plain integer, or an integer followed by
// one of B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024),
// optionally separated by a space: "25MiB", "10MB", "512KiB", "1048576".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q; use e.g. \"25MiB\", \"10MB\" or a byte count", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	unit := strings.TrimSpace(t[i:])
	if unit == "" {
		return n, nil
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			if n > math.MaxInt64/u.mult {
				return 0, fmt.Errorf("size %q is too large", s)
			}
			return n * u.mult, nil
		}
	}
	return 0, fmt.Errorf("invalid size unit %q in %q; use B, KB, MB, GB, KiB, MiB or GiB", unit, s)
}

// FormatSize formats n with the largest binary unit that divides it, so that
// ParseSize reads it back exactly.
func FormatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}

// ParsePrefix parses a network in CIDR notation or a bare address, which
// stands for that single host (/32 or /128). Host bits are cleared.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.IndexByte(s, '/') >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid network %q; use CIDR notation like \"192.0.2.0/24\" or a bare address", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid network %q; use CIDR notation like \"192.0.2.0/24\" or a bare address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// isHostname reports whether s is a syntactically valid DNS host name.
// Underscores are allowed because real host names carry them, even if
// RFC 952 does not.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// checkHostPort checks a host:port address. An empty host is allowed only
// when emptyHost is set (listening on every address). Port 0 is allowed only
// when zeroPort is set (listening on a port the kernel picks).
func checkHostPort(s string, emptyHost, zeroPort bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("invalid address %q; use host:port, e.g. \"192.0.2.1:25\" or \"[2001:db8::1]:25\"", s)
	}
	switch {
	case host == "":
		if !emptyHost {
			return fmt.Errorf("address %q has no host", s)
		}
	case strings.IndexByte(host, ':') >= 0:
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("invalid IPv6 address in %q", s)
		}
	default:
		if _, err := netip.ParseAddr(host); err != nil && !isHostname(host) {
			return fmt.Errorf("invalid host in %q", s)
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || port[0] == '+' {
		return fmt.Errorf("invalid port in %q", s)
	}
	if n == 0 && !zeroPort {
		return fmt.Errorf("port 0 in %q", s)
	}
	return nil
}

// normalizeResolver turns "host" or "host:port" into host:port, with DNS's
// port 53 when none is given.
func normalizeResolver(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(a.String(), "53"), nil
	}
	if isHostname(s) {
		return net.JoinHostPort(s, "53"), nil
	}
	if err := checkHostPort(s, false, false); err != nil {
		return "", fmt.Errorf("invalid resolver %q; use host or host:port, e.g. \"192.0.2.53\" or \"[2001:db8::53]:5353\"", s)
	}
	return s, nil
}

// normalizeDomain lower-cases a domain and drops its trailing dot, the form
// in which the session compares recipient domains.
func normalizeDomain(s string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(s, "."))
	if !isHostname(d) {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return "", fmt.Errorf("invalid domain %q; write internationalized domains in their xn-- (A-label) form", s)
			}
		}
		return "", fmt.Errorf("invalid domain %q", s)
	}
	return d, nil
}

type relayTarget struct {
	proto, network, address string
}

const relayForms = `"" (local Maildir), "smtp://host:port", "lmtp://host:port" or "lmtp+unix:///path"`

// parseRelay checks a Delivery.Relay value and splits it into what the
// delivery code dials.
func parseRelay(s string) (relayTarget, error) {
	if s == "" {
		return relayTarget{}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return relayTarget{}, fmt.Errorf("invalid relay %q; use %s", s, relayForms)
	}
	switch u.Scheme {
	case "smtp", "lmtp", "lmtp+unix":
	default:
		return relayTarget{}, fmt.Errorf("invalid relay %q; use %s", s, relayForms)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return relayTarget{}, fmt.Errorf("relay %q must not carry user info, a query or a fragment", s)
	}
	if u.Scheme == "lmtp+unix" {
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return relayTarget{}, fmt.Errorf("relay %q needs an absolute socket path: lmtp+unix:///path", s)
		}
		return relayTarget{"lmtp", "unix", u.Path}, nil
	}
	if u.Path != "" && u.Path != "/" {
		return relayTarget{}, fmt.Errorf("relay %q must not have a path", s)
	}
	if u.Port() == "" {
		return relayTarget{}, fmt.Errorf("relay %q has no port; use %s://host:port", s, u.Scheme)
	}
	if err := checkHostPort(u.Host, false, false); err != nil {
		return relayTarget{}, fmt.Errorf("relay %q: %v", s, err)
	}
	return relayTarget{u.Scheme, "tcp", u.Host}, nil
}

// checkRedis checks a Fleet.Redis value: host:port or a URL in the forms
// go-redis's ParseURL takes.
func checkRedis(s string) error {
	if !strings.Contains(s, "://") {
		if err := checkHostPort(s, false, false); err != nil {
			return fmt.Errorf("invalid redis address %q; use host:port or a redis://, rediss:// or unix:// URL", s)
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid redis URL %q", s)
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			return fmt.Errorf("redis URL %q has no host", s)
		}
		if u.Port() != "" {
			if err := checkHostPort(u.Host, false, false); err != nil {
				return fmt.Errorf("redis URL %q: %v", s, err)
			}
		}
		return nil
	case "unix":
		if u.Path == "" {
			return fmt.Errorf("redis URL %q has no socket path", s)
		}
		return nil
	}
	return fmt.Errorf("invalid redis URL scheme in %q; use redis://, rediss:// or unix://", s)
}

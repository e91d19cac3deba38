package tcpwrap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// maxLine bounds a line, after joining continuation lines, so that a
// corrupt or hostile file costs bounded memory. tcpd's own limit is BUFSIZ.
const maxLine = 1 << 20

// readLines calls fn with every logical line of r and the number of the
// physical line it starts on. As in tcpd, a backslash at the end of a line
// joins the next line to it with nothing in between.
func readLines(r io.Reader, name string, fn func(line int, text string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	var (
		buf   strings.Builder
		n     int // physical line number
		start int // where the current logical line began
		cont  bool
	)
	for sc.Scan() {
		n++
		b := sc.Bytes()
		if !cont {
			start = n
			buf.Reset()
		}
		if buf.Len()+len(b) > maxLine {
			return &ParseError{File: name, Line: start, Msg: "line too long"}
		}
		if len(b) > 0 && b[len(b)-1] == '\\' {
			buf.Write(b[:len(b)-1])
			cont = true
			continue
		}
		buf.Write(b)
		cont = false
		fn(start, buf.String())
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &ParseError{File: name, Line: n + 1, Msg: "line too long"}
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if cont {
		// A backslash on the last line continues into nothing.
		fn(start, buf.String())
	}
	return nil
}

// parser turns lines into rules, collecting every error and warning.
type parser struct {
	file  string
	line  int
	errs  []error
	warns []string
}

func (p *parser) errorf(format string, args ...any) {
	p.errs = append(p.errs, &ParseError{File: p.file, Line: p.line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(format string, args ...any) {
	p.warns = append(p.warns, fmt.Sprintf("%s:%d: ", p.file, p.line)+fmt.Sprintf(format, args...))
}

// patKind is what a pattern matches on. The first five are the wildcards of
// hosts_access(5), in the order of index.special.
type patKind uint8

const (
	patAll patKind = iota
	patLocal
	patKnown
	patUnknown
	patParanoid
	patSuffix     // ".example.com": end of the host name
	patName       // host name, or daemon name, exactly
	patNamePrefix // "mail.": start of the host name
	patPrefix     // address, n.n.n., net/mask, CIDR
	patGlob       // '*' and '?' on host name or address text
	patNever      // parsed but unsupported
)

const numSpecial = int(patParanoid) + 1

// pattern is one element of a daemon or client list.
type pattern struct {
	kind   patKind
	text   string // as written, for Verdict.Pattern
	s      string // lower-case operand of suffix, name and glob patterns
	prefix netip.Prefix
}

// chain is a list with its EXCEPT operators: "a b EXCEPT c EXCEPT d" is
// {{a, b}, {c}, {d}} and means (a or b) and not (c and not d), as tcpd
// evaluates it.
type chain [][]pattern

// rule is one line of a file.
type rule struct {
	line    int
	allow   bool // the verdict when the rule matches
	daemons chain
	clients chain
}

// isSep reports list separators, as tcpd's strtok(", \t\r\n").
func isSep(r rune) bool {
	return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n'
}

// splitAt cuts s at the first delim that is not inside [brackets], so that
// the colons of an IPv6 address do not end a field.
func splitAt(s string, delim byte) (before, after string, found bool) {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '[':
			depth++
		case c == ']':
			if depth > 0 {
				depth--
			}
		case c == delim && depth == 0:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// parseRule parses one logical line; ok is false for blank lines, comments
// and lines with errors. A '#' after leading blanks also starts a comment
// (tcpd wants it in the first column and would complain of a missing ':').
func (p *parser) parseRule(text string, fileAllows bool) (r rule, ok bool) {
	trimmed := strings.TrimLeft(text, " \t\r\n")
	if trimmed == "" || trimmed[0] == '#' {
		return rule{}, false
	}
	daemons, rest, found := splitAt(text, ':')
	if !found {
		p.errorf("missing ':' between daemon list and client list")
		return rule{}, false
	}
	clients, opts, hasOpts := splitAt(rest, ':')
	r = rule{line: p.line, allow: fileAllows}
	ok = true
	var good bool
	if r.daemons, good = p.parseList(daemons, "daemon", p.daemonPattern); !good {
		ok = false
	}
	if r.clients, good = p.parseList(clients, "client", p.clientPattern); !good {
		ok = false
	}
	if hasOpts {
		if r.allow, good = p.parseOptions(opts, fileAllows); !good {
			ok = false
		}
	}
	return r, ok
}

func (p *parser) parseList(s, what string, parse func(string) (pattern, bool)) (chain, bool) {
	fields := strings.FieldsFunc(s, isSep)
	if len(fields) == 0 {
		p.errorf("empty %s list", what)
		return nil, false
	}
	ok := true
	c := chain{nil}
	n := 0 // tokens in the current operand
	for _, f := range fields {
		if strings.EqualFold(f, "EXCEPT") {
			if n == 0 {
				p.errorf("EXCEPT without a %s pattern before it", what)
				ok = false
			}
			c = append(c, nil)
			n = 0
			continue
		}
		n++
		pat, good := parse(f)
		if !good {
			ok = false
			continue
		}
		c[len(c)-1] = append(c[len(c)-1], pat)
	}
	if n == 0 {
		p.errorf("EXCEPT without a %s pattern after it", what)
		ok = false
	}
	return c, ok
}

func (p *parser) daemonPattern(tok string) (pattern, bool) {
	pat := pattern{text: tok}
	switch {
	case strings.EqualFold(tok, "ALL"):
		pat.kind = patAll
	case strings.Contains(tok, "@"):
		p.warnf("daemon@host pattern %q is not supported (it matches on the server's own address); it never matches", tok)
		pat.kind = patNever
	case strings.ContainsAny(tok, "*?"):
		pat.kind = patGlob
		pat.s = strings.ToLower(tok)
	default:
		pat.kind = patName
		pat.s = canonicalDaemon(tok)
	}
	return pat, true
}

// canonicalDaemon lower-cases a daemon name, without allocating when it
// already is, and maps the alias sendmail to mxguard.
func canonicalDaemon(d string) string {
	for i := 0; i < len(d); i++ {
		if 'A' <= d[i] && d[i] <= 'Z' {
			d = strings.ToLower(d)
			break
		}
	}
	if d == "sendmail" {
		return Daemon
	}
	return d
}

var specialNames = [numSpecial]string{"ALL", "LOCAL", "KNOWN", "UNKNOWN", "PARANOID"}

func (p *parser) clientPattern(tok string) (pattern, bool) {
	pat := pattern{text: tok}
	for k, name := range specialNames {
		if strings.EqualFold(tok, name) {
			pat.kind = patKind(k)
			return pat, true
		}
	}
	switch {
	case tok[0] == '@':
		p.warnf("NIS netgroup %q is not supported; it never matches", tok)
		pat.kind = patNever
	case strings.Contains(tok, "@"):
		p.warnf("user@host pattern %q is not supported (it needs RFC 1413 ident lookups); it never matches", tok)
		pat.kind = patNever
	case tok[0] == '/':
		p.warnf("pattern file %q is not read; it never matches", tok)
		pat.kind = patNever
	case tok[0] == '[':
		pfx, err := parseIPv6Pattern(tok)
		if err != nil {
			p.errorf("bad IPv6 pattern %q: %v", tok, err)
			return pat, false
		}
		pat.kind, pat.prefix = patPrefix, pfx
	case strings.Contains(tok, "/"):
		pfx, err := parseNetMask(tok)
		if err != nil {
			p.errorf("bad net/mask pattern %q: %v", tok, err)
			return pat, false
		}
		pat.kind, pat.prefix = patPrefix, pfx
	case tok[0] == '.':
		if len(tok) == 1 {
			p.errorf("domain pattern %q has no domain", tok)
			return pat, false
		}
		if strings.ContainsAny(tok, "*?") {
			p.warnf("wildcards in domain pattern %q are taken literally, as in tcpd", tok)
		}
		pat.kind, pat.s = patSuffix, strings.ToLower(tok)
	case tok[len(tok)-1] == '.':
		if isNumeric(tok) {
			pfx, err := parseAddrPrefix(tok)
			if err != nil {
				p.errorf("bad address prefix %q: %v", tok, err)
				return pat, false
			}
			pat.kind, pat.prefix = patPrefix, pfx
			break
		}
		if strings.ContainsAny(tok, "*?") {
			p.warnf("wildcards in prefix pattern %q are taken literally, as in tcpd", tok)
		}
		pat.kind, pat.s = patNamePrefix, strings.ToLower(tok)
	case strings.ContainsAny(tok, "*?"):
		pat.kind, pat.s = patGlob, strings.ToLower(tok)
	case isNumeric(tok):
		a, err := netip.ParseAddr(tok)
		if err != nil {
			p.errorf("bad address %q: %v", tok, err)
			return pat, false
		}
		pat.kind, pat.prefix = patPrefix, netip.PrefixFrom(a, a.BitLen())
	default:
		pat.kind, pat.s = patName, strings.ToLower(tok)
	}
	return pat, true
}

// isNumeric reports whether s looks like (part of) a dotted IPv4 address,
// which tcpd matches against the address only, never the host name.
func isNumeric(s string) bool {
	return strings.Trim(s, "0123456789.") == ""
}

// parseBits parses a prefix length of at most max.
func parseBits(s string, max int) (int, error) {
	if s == "" || len(s) > 3 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("prefix length %q is not a number", s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	if n > max {
		return 0, fmt.Errorf("prefix length %d is more than %d", n, max)
	}
	return n, nil
}

// exactPrefix builds the prefix of addr and bits, refusing bits set outside
// the mask: tcpd compares (address & mask) with the net as written, so such
// a rule would never match.
func exactPrefix(a netip.Addr, bits int) (netip.Prefix, error) {
	pfx := netip.PrefixFrom(a, bits)
	if m := pfx.Masked(); m != pfx {
		return netip.Prefix{}, fmt.Errorf("the net has bits set outside the mask (did you mean %s?)", m)
	}
	// Clients are matched unmapped, so an IPv4-mapped net becomes IPv4.
	if a.Is4In6() && bits >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), bits-96)
	}
	return pfx, nil
}

// parseIPv6Pattern parses "[addr]" and "[addr]/len".
func parseIPv6Pattern(tok string) (netip.Prefix, error) {
	end := strings.IndexByte(tok, ']')
	if end < 0 {
		return netip.Prefix{}, errors.New("missing ']'")
	}
	a, err := netip.ParseAddr(tok[1:end])
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("zones are not supported")
	}
	bits := a.BitLen()
	if rest := tok[end+1:]; rest != "" {
		lenText, found := strings.CutPrefix(rest, "/")
		if !found {
			return netip.Prefix{}, fmt.Errorf("unexpected %q after ']'", rest)
		}
		if bits, err = parseBits(lenText, a.BitLen()); err != nil {
			return netip.Prefix{}, err
		}
	}
	return exactPrefix(a, bits)
}

// parseNetMask parses "n.n.n.n/m.m.m.m" and "n.n.n.n/len".
func parseNetMask(tok string) (netip.Prefix, error) {
	netText, maskText, _ := strings.Cut(tok, "/")
	a, err := netip.ParseAddr(netText)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !a.Is4() {
		return netip.Prefix{}, errors.New("the net is not an IPv4 address (write IPv6 as [addr]/len)")
	}
	var bits int
	if strings.Contains(maskText, ".") {
		m, err := netip.ParseAddr(maskText)
		if err != nil || !m.Is4() {
			return netip.Prefix{}, fmt.Errorf("mask %q is not an IPv4 address", maskText)
		}
		if bits = maskBits(m); bits < 0 {
			return netip.Prefix{}, fmt.Errorf("mask %s is not contiguous", maskText)
		}
	} else if bits, err = parseBits(maskText, 32); err != nil {
		return netip.Prefix{}, err
	}
	return exactPrefix(a, bits)
}

// maskBits returns the length of the contiguous IPv4 mask m, or -1.
func maskBits(m netip.Addr) int {
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for v&(1<<31) != 0 {
		v <<= 1
		n++
	}
	if v != 0 {
		return -1
	}
	return n
}

// parseAddrPrefix parses "n.", "n.n." or "n.n.n.", which tcpd matches as the
// leading fields of the address text.
func parseAddrPrefix(tok string) (netip.Prefix, error) {
	fields := strings.Split(tok[:len(tok)-1], ".")
	if len(fields) > 3 {
		return netip.Prefix{}, errors.New("more than three fields (a full address has no trailing dot)")
	}
	var b [4]byte
	for i, f := range fields {
		if f == "" || len(f) > 3 || (len(f) > 1 && f[0] == '0') {
			return netip.Prefix{}, fmt.Errorf("field %q is not a decimal number", f)
		}
		n := 0
		for j := 0; j < len(f); j++ {
			n = n*10 + int(f[j]-'0')
		}
		if n > 255 {
			return netip.Prefix{}, fmt.Errorf("field %d is more than 255", n)
		}
		b[i] = byte(n)
	}
	return netip.PrefixFrom(netip.AddrFrom4(b), 8*len(fields)), nil
}

// parseOptions handles the hosts_options(5) fields after the client list and
// returns the rule's verdict.
func (p *parser) parseOptions(s string, allow bool) (bool, bool) {
	opts := splitOptions(s)
	last := -1
	for i, o := range opts {
		if strings.TrimSpace(o) != "" {
			last = i
		}
	}
	ok := true
	for i, o := range opts {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		key, value := o, ""
		if i := strings.IndexAny(o, " \t="); i >= 0 {
			key, value = o[:i], strings.TrimSpace(o[i:])
		}
		switch k := strings.ToLower(key); k {
		case "allow", "deny":
			if value != "" {
				p.errorf("option %q takes no value", key)
				ok = false
			}
			if i != last {
				p.errorf("option %q must be the last option", key)
				ok = false
			}
			allow = k == "allow"
		default:
			p.warnf("option %q is ignored: mxguard supports only allow and deny", key)
		}
	}
	return allow, ok
}

// splitOptions splits at each colon not escaped as "\:".
func splitOptions(s string) []string {
	var (
		opts []string
		cur  strings.Builder
	)
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == ':':
			cur.WriteByte(':')
			i++
		case s[i] == ':':
			opts = append(opts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(opts, cur.String())
}

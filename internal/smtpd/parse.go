package smtpd

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Command is one parsed SMTP command line.
type Command struct {
	Verb string // upper-case
	Arg  string // everything after the verb and one space, as sent
}

// ParseCommand splits a command line (without its CRLF) into verb and
// argument. It checks only what holds for every command: the verb is
// alphabetic and at most a few letters long.
func ParseCommand(line string) (Command, error) {
	verb, arg, _ := strings.Cut(line, " ")
	if verb == "" || len(verb) > 10 {
		return Command{}, errors.New("no command verb")
	}
	for i := 0; i < len(verb); i++ {
		c := verb[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return Command{}, errors.New("command verb is not alphabetic")
		}
	}
	return Command{Verb: strings.ToUpper(verb), Arg: arg}, nil
}

// Path is a mailbox from MAIL FROM or RCPT TO. The null reverse-path "<>"
// is the zero Path.
type Path struct {
	Local  string // local part; unquoted (quotes and backslashes removed)
	Domain string // domain as sent (case kept), or an address literal in brackets
	Quoted bool   // the local part was a quoted string
}

// IsNull reports whether p is the null reverse-path <>.
func (p Path) IsNull() bool { return p.Local == "" && p.Domain == "" }

// String renders the path as "local@domain" (not quoted; for logs and the
// spool, which keep the address as the client meant it).
func (p Path) String() string {
	if p.Domain == "" {
		return p.Local
	}
	return p.Local + "@" + p.Domain
}

// Param is one ESMTP parameter of MAIL or RCPT (KEY or KEY=VALUE).
type Param struct{ Key, Value string }

// Errors from ParsePathArg. Each maps to a reply in the session.
var (
	ErrPathSyntax   = errors.New("bad address syntax")
	ErrPathTooLong  = errors.New("address too long")
	ErrParamSyntax  = errors.New("bad parameter syntax")
	ErrNonASCIIPath = errors.New("non-ASCII address without SMTPUTF8")
)

// ParsePathArg parses the argument of MAIL or RCPT after the "FROM:" or
// "TO:" prefix: a path in angle brackets followed by ESMTP parameters.
// One space after the colon is tolerated, as most servers do. utf8 allows
// UTF-8 in the address (RFC 6531); postmaster allows the bare
// "<Postmaster>" of RCPT (RFC 5321 4.5.1).
func ParsePathArg(s string, utf8ok, postmaster bool) (Path, []Param, error) {
	s = strings.TrimPrefix(s, " ")
	if !strings.HasPrefix(s, "<") {
		return Path{}, nil, ErrPathSyntax
	}
	end := closingBracket(s)
	if end < 0 {
		return Path{}, nil, ErrPathSyntax
	}
	inner, rest := s[1:end], s[end+1:]
	var params []Param
	if rest != "" {
		if rest[0] != ' ' {
			return Path{}, nil, ErrParamSyntax
		}
		for f := range strings.FieldsSeq(rest) {
			k, v, _ := strings.Cut(f, "=")
			if !isEsmtpKeyword(k) {
				return Path{}, nil, ErrParamSyntax
			}
			params = append(params, Param{strings.ToUpper(k), v})
		}
	}
	if len(inner) > 256 {
		return Path{}, nil, ErrPathTooLong
	}
	if inner == "" {
		return Path{}, params, nil
	}
	if !utf8ok && !isASCII(inner) {
		return Path{}, nil, ErrNonASCIIPath
	}
	if !utf8.ValidString(inner) {
		return Path{}, nil, ErrPathSyntax
	}
	// A source route (@a,@b:user@c) must be accepted and ignored
	// (RFC 5321 4.1.1.3, appendix C); what counts is the mailbox after it.
	if inner[0] == '@' {
		i := strings.IndexByte(inner, ':')
		if i < 0 || !validRoute(inner[:i]) {
			return Path{}, nil, ErrPathSyntax
		}
		inner = inner[i+1:]
	}
	if postmaster && strings.EqualFold(inner, "postmaster") {
		return Path{Local: "postmaster"}, params, nil
	}
	p, err := parseMailbox(inner)
	return p, params, err
}

// closingBracket finds the '>' that closes the path, skipping quoted parts.
func closingBracket(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '>':
			return i
		}
	}
	return -1
}

func validRoute(r string) bool {
	for _, hop := range strings.Split(r, ",") {
		if len(hop) < 2 || hop[0] != '@' || !validDomain(hop[1:]) {
			return false
		}
	}
	return true
}

// parseMailbox parses Local-part "@" (Domain / address-literal).
func parseMailbox(s string) (Path, error) {
	var p Path
	var rest string
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			c := s[i]
			if c == '\\' {
				i++
				if i == len(s) || s[i] < 32 || s[i] == 127 {
					return Path{}, ErrPathSyntax
				}
				c = s[i]
			} else if c < 32 || c == 127 {
				return Path{}, ErrPathSyntax
			}
			b.WriteByte(c)
		}
		if i == len(s) {
			return Path{}, ErrPathSyntax
		}
		p.Local, p.Quoted, rest = b.String(), true, s[i+1:]
	} else {
		at := strings.LastIndexByte(s, '@')
		if at < 0 {
			return Path{}, ErrPathSyntax
		}
		p.Local, rest = s[:at], s[at:]
		if !validDotString(p.Local) {
			return Path{}, ErrPathSyntax
		}
	}
	if !strings.HasPrefix(rest, "@") {
		return Path{}, ErrPathSyntax
	}
	p.Domain = rest[1:]
	if len(p.Local) > 64 || len(p.Domain) > 255 {
		return Path{}, ErrPathTooLong
	}
	if strings.HasPrefix(p.Domain, "[") {
		if !validAddressLiteral(p.Domain) {
			return Path{}, ErrPathSyntax
		}
	} else if !validDomain(p.Domain) {
		return Path{}, ErrPathSyntax
	}
	return p, nil
}

// validDotString checks Atom *("." Atom) with RFC 5322 atext; octets of
// 0x80 and above are allowed as RFC 6531 permits (ASCII-only was enforced
// earlier when SMTPUTF8 is absent).
func validDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c == '.' || isAtext(c) {
			continue
		}
		return false
	}
	return true
}

func isAtext(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// validDomain checks sub-domain *("." sub-domain), with no trailing dot:
// "user@example.com." is not a valid mailbox (RFC 5321 4.1.2).
func validDomain(d string) bool {
	if d == "" || len(d) > 255 {
		return false
	}
	for len(d) > 0 {
		label := d
		if i := strings.IndexByte(d, '.'); i >= 0 {
			label, d = d[:i], d[i+1:]
			if d == "" {
				return false // trailing dot
			}
		} else {
			d = ""
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 0x80 || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				return false
			}
		}
	}
	return true
}

func validAddressLiteral(d string) bool {
	if len(d) < 3 || d[len(d)-1] != ']' {
		return false
	}
	lit := d[1 : len(d)-1]
	if v6, ok := strings.CutPrefix(lit, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(lit)
	return err == nil && a.Is4()
}

func isEsmtpKeyword(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// parseSize parses the SIZE= parameter value.
func parseSize(v string) (int64, bool) {
	if v == "" || len(v) > 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n >= 0
}

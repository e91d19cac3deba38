package control

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Target is what ParseTarget found: the network to act on and, when it came
// from a log line, which field of the line named it and why the line was
// written, so that the operator sees what is about to be trusted or denied.
type Target struct {
	Prefix netip.Prefix
	Source string // where the address came from, e.g. "ip= field of an mxguard log line"
	Reason string // why the line was logged, e.g. "reason=ratecontrol"; "" when no line was given
	// Host is the client's name where a sendmail line gives it with the
	// address ("host [addr]"), "" when it gives none, or one sendmail
	// marks "(may be forged)".
	Host string
}

// String describes t for the operator, e.g.
// "client 192.0.2.5 (ip= field of an mxguard log line, reason=ratecontrol)".
func (t Target) String() string {
	what := "client " + t.Prefix.Addr().String()
	if !t.Prefix.IsSingleIP() {
		what = "network " + t.Prefix.String()
	}
	if t.Reason == "" {
		return fmt.Sprintf("%s (%s)", what, t.Source)
	}
	return fmt.Sprintf("%s (%s, %s)", what, t.Source, printable(t.Reason, 200))
}

// ParsePrefix reads an IP address (as a /32 or /128) or a CIDR prefix (host
// bits cleared), and nothing else: the form of the control protocol and of
// the trust and deny files.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && !strings.Contains(s, "/") { // not "fe80::1%eth0/64", a zone "eth0/64"
		a = a.Unmap().WithZone("")
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%s is not an IP address or CIDR prefix", clip(s))
}

// maxLine bounds what ParseTarget reads: the longest syslog line is a few
// KiB, and a longer argument is a paste gone wrong.
const maxLine = 64 << 10

// ParseTarget reads what an operator gives `mxguard trust` or `deny`: an IP
// address, a CIDR prefix, or one whole log line written by mxguard or by
// sendmail. From a log line it takes the client's address only from the
// field the server itself wrote for the client, never from text the client
// could have sent (a HELO name, an address, a header): that text ends up in
// the same line, and a client able to choose which address gets trusted
// would trust itself, or anyone it likes. A line with no such field, or
// with more than one, is refused with the reason.
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	if p, err := ParsePrefix(s); err == nil {
		src := "given as an address"
		if !p.IsSingleIP() {
			src = "given as a CIDR prefix"
		}
		return Target{Prefix: p, Source: src}, nil
	}
	switch {
	case s == "":
		return Target{}, errors.New("nothing given: give an IP address, a CIDR prefix or a log line")
	case len(s) > maxLine:
		return Target{}, fmt.Errorf("log line refused: %d bytes, more than any log line (%d); give exactly one line", len(s), maxLine)
	case !utf8.ValidString(s):
		return Target{}, errors.New("log line refused: not valid UTF-8")
	}
	// C0 controls only: a newline means several lines pasted, while slog
	// leaves DEL (and, in JSON, U+0080 to U+009F) as they are.
	if i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return Target{}, fmt.Errorf("log line refused: it holds the control character %q at byte %d; give exactly one line", r, i)
	}
	if !strings.ContainsAny(s, " =[{") {
		return Target{}, fmt.Errorf("%s is not an IP address, a CIDR prefix or a log line", clip(s))
	}
	return parseLine(s)
}

// sendmailIdents are the syslog tags sendmail logs under: its own name, the
// Debian package's daemon name, and the process title that FreeBSD's
// syslog records for the listening daemon.
var sendmailIdents = map[string]bool{"sendmail": true, "sm-mta": true, "sm-acceptingconnections": true}

var (
	rePRI     = regexp.MustCompile(`^<[0-9]{1,3}>`)       // a raw syslog priority
	reTagTail = regexp.MustCompile(`^\[[0-9]+\]:(?: |$)`) // the "[pid]: " of "ident[pid]: "
	reIdent   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.@/-]*$`)
)

// syslogTag splits off a syslog or journald prefix ("Mar 29 21:14:07 host
// sm-mta[4211]: ") and returns its tag ("sm-mta") and the message after it.
// The tag's '[' must be the first of '[', '<', '(', '"', '=' and '{' in the
// line: a prefix holds none of those before its tag, while the message
// after it may hold client text, and a tag found there would be the
// client's word, not the log's.
func syslogTag(s string) (ident, msg string, ok bool) {
	l, ok := SplitSyslog(s)
	return l.Ident, l.Msg, ok
}

// SyslogLine is a log line split at its syslog or journald tag.
type SyslogLine struct {
	Prefix string // before the tag: the time and the host ("Mar 29 21:14:07 mx ")
	Ident  string // the tag's name ("sm-mta")
	PID    int    // the tag's process ID
	Msg    string // after the tag
}

// SplitSyslog splits a line at its tag "ident[pid]: ", found as ParseTarget
// finds it (see syslogTag); a raw priority ("<22>") is dropped. ok is
// false for a line with no such tag.
func SplitSyslog(s string) (l SyslogLine, ok bool) {
	if m := rePRI.FindStringIndex(s); m != nil {
		s = s[m[1]:]
	}
	i := strings.IndexAny(s, `[<("={`)
	if i < 0 || s[i] != '[' {
		return SyslogLine{}, false
	}
	start := strings.LastIndexByte(s[:i], ' ') + 1
	ident := s[start:i]
	tail := reTagTail.FindString(s[i:])
	if tail == "" || !reIdent.MatchString(ident) {
		return SyslogLine{}, false
	}
	pid, err := strconv.Atoi(tail[1:strings.IndexByte(tail, ']')])
	if err != nil {
		return SyslogLine{}, false // more digits than an int holds
	}
	return SyslogLine{Prefix: s[:start], Ident: ident, PID: pid, Msg: s[i+len(tail):]}, true
}

// IsSendmail reports whether ident is a tag sendmail logs under.
func IsSendmail(ident string) bool { return sendmailIdents[ident] }

// parseLine picks the client out of a log line that is not a bare address.
func parseLine(s string) (Target, error) {
	if ident, msg, ok := syslogTag(s); ok {
		if !sendmailIdents[ident] {
			return parseMxguard(msg)
		}
		t, ok, err := parseSendmail(msg)
		if !ok {
			return Target{}, errSendmailUnknown
		}
		return t, err
	}
	// A sendmail message without its syslog prefix.
	if t, ok, err := parseSendmail(s); ok {
		return t, err
	}
	return parseMxguard(s)
}

// printable returns s for the terminal: cut to max bytes, and quoted when
// it holds anything that is not a printable character.
func printable(s string, max int) string {
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}

// clip quotes s for an error message, cut short.
func clip(s string) string {
	if len(s) > 60 {
		cut := 60
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

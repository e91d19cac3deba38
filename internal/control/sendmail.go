package control

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// sendmail's log lines are free text with no quoting: an envelope address,
// a Message-Id, a SASL user name or a reject text is written as the client
// sent it, commas and "relay=" included. So the client is read only where
// sendmail writes it: the relay= field of the lines that end in one or
// carry one at a fixed place (from=, ruleset=, AUTH and STARTTLS as
// server), where client text can add a second relay= but never remove the
// real one, so any disagreement is refused; or the "[addr]" that a few
// messages begin with, before any client text.
//
// The client, as sendmail's $_ macro and CurSmtpClient hold it
// (daemon.c getauthinfo): "[IDENT:]user@" when RFC 1413 answered (the user
// name cleaned to letters, digits and a few symbols), the host name
// (checked by the resolver: letters, digits, '-', '_', '.') and " ", or
// nothing when the address has no name, then "[1.2.3.4]" or
// "[IPv6:2001:db8::1]", then " (may be forged)" when the name does not
// resolve back to the address. The name's characters leave out '<', '"',
// '(' and the like, with which client text starts ("<addr>... User
// unknown"), so that such text never passes for a client field.
//
// The groups are named: addr (always), host and forged (where the form
// has them).
const (
	smName   = "[-A-Za-z0-9._:@!#$%&'*+/^`{|}~]+"
	smClient = `(?:(?P<host>` + smName + `) |` + smName + `@)?\[(?:IPv6:)?(?P<addr>[0-9A-Fa-f:.]+)\](?P<forged> \(may be forged\))?`
)

var (
	reQID         = regexp.MustCompile(`^(?:[0-9A-Za-z]{6,24}|NOQUEUE): `)
	reRelayClient = regexp.MustCompile(`^relay=` + smClient + `(?:,|$)`)
	reRuleset     = regexp.MustCompile(`^ruleset=([^\s,]+), `)
	reArg2        = regexp.MustCompile(`^ruleset=check_relay, arg1=[^\s,]*, arg2=(?:IPv6:)?([0-9A-Fa-f:.]+), relay=`)
)

// sendmailForms are sendmail's messages that begin with the client's
// address and carry no relay= field, with what each one means.
var sendmailForms = []struct {
	re     *regexp.Regexp
	reason string
}{
	// srvrsmtp.c: "rejecting commands from %s [%s] due to pre-greeting traffic after %d seconds"
	// The name is empty or "[addr]" when the address has none.
	{regexp.MustCompile(`^rejecting commands from (?:(?P<host>` + smName + `)|\[[0-9A-Fa-f:.IPv]+\]|) \[(?:IPv6:)?(?P<addr>[0-9A-Fa-f:.]+)\] due to pre-greeting traffic`), "pre-greeting traffic"},
	// conf.c validate_connection: "tcpwrappers (%s, %s) rejection", the
	// name being "unknown" when the address has none.
	{regexp.MustCompile(`^tcpwrappers \((?:(?P<host>` + smName + `)|\[[0-9A-Fa-f:.IPv]+\]), (?:IPv6:)?(?P<addr>[0-9A-Fa-f:.]+)\) rejection$`), "tcpwrappers rejection"},
	// srvrsmtp.c: "%s did not issue MAIL/EXPN/VRFY/ETRN during connection to %s"
	{regexp.MustCompile(`^` + smClient + ` did not issue MAIL/EXPN/VRFY/ETRN during connection to `), "did not issue MAIL/EXPN/VRFY/ETRN"},
	// srvrsmtp.c: "lost input channel from %s to %s after %s"
	{regexp.MustCompile(`^lost input channel from ` + smClient + ` to [^\s]+ after `), "lost input channel"},
	// srvrsmtp.c checksmtpattack: "%s: possible SMTP attack: command=%.40s, count=%u"
	{regexp.MustCompile(`^` + smClient + `: possible SMTP attack: command=`), "possible SMTP attack"},
	// srvrsmtp.c: "%s: probable open proxy: command=%.40s"
	{regexp.MustCompile(`^` + smClient + `: probable open proxy: command=`), "probable open proxy"},
	// srvrsmtp.c: "%s: %s [rejected]" for EXPN and VRFY
	{regexp.MustCompile(`^` + smClient + `: (?i:expn|vrfy) .*\[rejected\]$`), "EXPN/VRFY rejected"},
}

const (
	sourceRelay  = "relay= field of a sendmail log line"
	sourceClient = "client field of a sendmail log line"
)

var errSendmailUnknown = errors.New("log line refused: a sendmail line that names no client in a form mxguard knows " +
	"(the relay= of from=, ruleset=, AUTH and STARTTLS server lines; the [addr] that pre-greeting, " +
	"tcpwrappers, did-not-issue, lost-input-channel, SMTP-attack, open-proxy and EXPN/VRFY lines begin with)")

// parseSendmail reads the message part of a sendmail log line (after the
// syslog tag). ok is false when msg is in none of the forms above.
func parseSendmail(msg string) (t Target, ok bool, err error) {
	if m := reQID.FindString(msg); m != "" {
		msg = msg[len(m):]
	}
	switch {
	case strings.HasPrefix(msg, "to="):
		return Target{}, true, errors.New("log line refused: a sendmail to= line: its relay= is the host the mail " +
			"was delivered to, not a client; use the from= line of the same queue id")
	case strings.HasPrefix(msg, "from="), strings.HasPrefix(msg, "ruleset="),
		strings.HasPrefix(msg, "AUTH=server, "), strings.HasPrefix(msg, "STARTTLS=server, "),
		strings.HasPrefix(msg, "AUTH failure ("):
		t, err := sendmailRelay(msg)
		return t, true, err
	}
	for _, f := range sendmailForms {
		if m := f.re.FindStringSubmatch(msg); m != nil {
			raw := m[f.re.SubexpIndex("addr")]
			a, err := netip.ParseAddr(raw)
			if err != nil {
				return Target{}, true, fmt.Errorf("log line refused: the client field [%s] is not an IP address", clip(raw))
			}
			a = a.Unmap().WithZone("")
			return Target{Prefix: netip.PrefixFrom(a, a.BitLen()), Source: sourceClient, Reason: f.reason,
				Host: clientHost(f.re, m)}, true, nil
		}
	}
	return Target{}, false, nil
}

// ParseSendmail reads the message of one of sendmail's log lines (what
// follows its syslog tag) as ParseTarget reads a whole line: the client
// where sendmail writes it, with its host name. ok is false when msg is in
// no form mxguard knows; err says why a line in one names no client, or
// an ambiguous one.
func ParseSendmail(msg string) (t Target, ok bool, err error) { return parseSendmail(msg) }

// clientHost is the host name a match of re names the client by: "" when
// it names none, "unknown", or one sendmail marks "(may be forged)"; the
// RFC 1413 user ("user@host") left out.
func clientHost(re *regexp.Regexp, m []string) string {
	i := re.SubexpIndex("host")
	if i < 0 || m[i] == "" {
		return ""
	}
	if j := re.SubexpIndex("forged"); j >= 0 && m[j] != "" {
		return ""
	}
	h := m[i]
	if k := strings.LastIndexByte(h, '@'); k >= 0 {
		h = h[k+1:]
	}
	if strings.EqualFold(h, "unknown") {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// sendmailRelay reads the relay= field of a from=, ruleset=, AUTH or
// STARTTLS line. Every "relay=" in the line must be a client field naming
// the same address: the real one is always there, and another one can only
// be client text.
func sendmailRelay(msg string) (Target, error) {
	var addrs []netip.Addr
	count, last, host := 0, 0, ""
	ai := reRelayClient.SubexpIndex("addr")
	for i := 0; ; {
		j := strings.Index(msg[i:], "relay=")
		if j < 0 {
			break
		}
		i += j
		count++
		if m := reRelayClient.FindStringSubmatch(msg[i:]); m != nil {
			if a, err := netip.ParseAddr(m[ai]); err == nil {
				addrs = append(addrs, a.Unmap().WithZone(""))
				last = i + len(m[0])
				host = clientHost(reRelayClient, m)
			}
		}
		i += len("relay=")
	}
	switch {
	case count == 0:
		return Target{}, errors.New("log line refused: this sendmail line has no relay= field, so it names no client")
	case count == 1 && len(addrs) == 0:
		return Target{}, errors.New("log line refused: its relay= field names no client address (a local submission?)")
	}
	for _, a := range addrs {
		if a != addrs[0] {
			return Target{}, fmt.Errorf("log line refused: relay= names %s and %s: ambiguous; the client may have "+
				"written relay= into an address or other text it sent", addrs[0], a)
		}
	}
	if len(addrs) != count {
		// Also when none of them names a client ("from=relay=relay="),
		// which would leave no address to name.
		return Target{}, fmt.Errorf("log line refused: relay= appears %d times, and not every one names the same client: "+
			"ambiguous; the client may have written relay= into text it sent", count)
	}
	a := addrs[0]
	if m := reArg2.FindStringSubmatch(msg); m != nil {
		if b, err := netip.ParseAddr(m[1]); err != nil || b.Unmap() != a {
			return Target{}, fmt.Errorf("log line refused: check_relay's arg2=%s and relay= %s disagree", clip(m[1]), a)
		}
	}
	return Target{Prefix: netip.PrefixFrom(a, a.BitLen()), Source: sourceRelay, Reason: sendmailReason(msg, last), Host: host}, nil
}

// sendmailReason says why sendmail wrote a relay= line: the ruleset and its
// reject (or discard, quarantine) text, which follows the relay= field.
func sendmailReason(msg string, afterRelay int) string {
	switch {
	case strings.HasPrefix(msg, "from="):
		return "from= line: a message accepted from the client"
	case strings.HasPrefix(msg, "AUTH failure ("):
		return "AUTH failure"
	case strings.HasPrefix(msg, "AUTH=server"):
		return "AUTH=server: the client authenticated"
	case strings.HasPrefix(msg, "STARTTLS=server"):
		return "STARTTLS=server"
	}
	reason := "ruleset"
	if m := reRuleset.FindStringSubmatch(msg); m != nil {
		reason = "ruleset=" + m[1]
	}
	if rest, ok := strings.CutPrefix(msg[afterRelay:], " "); ok && rest != "" {
		reason += ", " + rest
	}
	return reason
}

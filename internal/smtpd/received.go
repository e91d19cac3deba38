package smtpd

import (
	"crypto/tls"
	"strings"
	"time"
)

// Received returns the trace header (RFC 5321 4.4) this server adds to a
// message accepted in s, ending in CRLF. id names the message in our logs;
// rcpt is named only for a single-recipient message, so that a copy for one
// recipient does not disclose the others.
func (s *Session) Received(hostname, id string, now time.Time) string {
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(sanitize(s.Helo))
	b.WriteString(" (")
	if s.Host != "" {
		b.WriteString(s.Host)
		b.WriteByte(' ')
	}
	b.WriteByte('[')
	a := s.Remote.Addr().Unmap()
	if a.Is6() {
		b.WriteString("IPv6:")
	}
	b.WriteString(a.String())
	b.WriteString("])\r\n\tby ")
	b.WriteString(hostname)
	b.WriteString(" (mxguard) with ")
	b.WriteString(s.protocol())
	b.WriteString(" id ")
	b.WriteString(id)
	if s.TLS != nil {
		b.WriteString("\r\n\t(using ")
		b.WriteString(tlsVersion(s.TLS.Version))
		b.WriteString(" with cipher ")
		b.WriteString(tls.CipherSuiteName(s.TLS.CipherSuite))
		b.WriteByte(')')
	}
	if len(s.Rcpts) == 1 {
		b.WriteString("\r\n\tfor <")
		b.WriteString(s.Rcpts[0].Mailbox())
		b.WriteByte('>')
	}
	b.WriteString(";\r\n\t")
	b.WriteString(now.Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// protocol is the "with" keyword of RFC 3848 and RFC 6531.
func (s *Session) protocol() string {
	p := "SMTP"
	switch {
	case s.UTF8:
		p = "UTF8SMTP"
	case s.ESMTP:
		p = "ESMTP"
	}
	if s.TLS != nil {
		p += "S"
	}
	return p
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1.0"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}

// sanitize keeps a client-chosen HELO name from breaking the header's
// structure: no parentheses, no control characters.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '(' || r == ')' {
			return '_'
		}
		return r
	}, s)
}

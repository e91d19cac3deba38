package smtpd

import "strings"

// Mailbox renders p in SMTP's syntax, as it goes into a MAIL or RCPT
// command and into Return-Path: a local part the client quoted stays
// quoted ("jane doe"@example.org, and "jane"@example.org too, as it was
// sent), one it did not stays a dot-string, and one that must be quoted
// is. Only a quoted-pair that escaped nothing ("j\ane") comes out without
// its backslash. The null path is "", the bare postmaster "postmaster".
func (p Path) Mailbox() string {
	if p.Domain == "" {
		return p.Local
	}
	if !p.Quoted && validDotString(p.Local) {
		return p.Local + "@" + p.Domain
	}
	var b strings.Builder
	b.Grow(len(p.Local) + len(p.Domain) + 4)
	b.WriteByte('"')
	for i := 0; i < len(p.Local); i++ {
		if c := p.Local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(p.Local[i])
	}
	b.WriteString(`"@`)
	b.WriteString(p.Domain)
	return b.String()
}

// ParseMailbox parses an address in SMTP's syntax, as Mailbox writes it
// (without angle brackets): the relay client checks with it that what it
// is about to send is what the server accepted at RCPT, and local delivery
// finds the mailbox's name (the local part without its quotes).
func ParseMailbox(s string) (Path, error) {
	if len(s) > 256 {
		return Path{}, ErrPathTooLong
	}
	return parseMailbox(s)
}

// Package tcpwrap implements the TCP wrappers access control language of
// hosts_access(5), with the allow and deny options of hosts_options(5), so
// that an existing /etc/hosts.allow and /etc/hosts.deny written for
// sendmail keep working, unchanged, in front of mxguard.
//
// As in tcpd, access is granted when a (daemon, client) pair matches a rule
// in hosts.allow; otherwise it is denied when the pair matches a rule in
// hosts.deny; otherwise it is granted. Within a file the first matching rule
// decides, which matters only when a rule carries an allow or deny option.
//
// The daemon is called "mxguard" (see [Daemon]); the name "sendmail" in a
// daemon list matches it too, so that a file written for sendmail needs no
// edit. Host names come from the caller, which does the DNS work: the
// package never resolves anything, so a check costs a few map lookups and
// never blocks.
//
// Where mxguard cannot do what tcpd does, the pattern or option is parsed,
// never matches (or is ignored), and [Table.Warnings] says so: NIS
// netgroups (@group), user@host patterns (they need RFC 1413 ident
// lookups), daemon@host patterns (they match on the server's own address),
// /file patterns, and every option but allow and deny (spawn, twist,
// severity, ...). A pattern tcpd would accept but that can never match as
// meant (a net with bits set outside its mask, an address prefix with four
// fields, a malformed address) is an error instead of a silently dead rule.
//
// Two departures from tcpd, both to keep rules from matching by accident: a
// .domain pattern is matched against the host name only (tcpd also tries it
// on the address text, so ".5" would match 10.0.0.5), and a name pattern
// never matches a client whose name did not forward-confirm (tcpd's
// "paranoid" host).
package tcpwrap

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
)

// Daemon is the daemon name mxguard checks its clients under. The name
// "sendmail" in a daemon list is an alias for it.
const Daemon = "mxguard"

// Client is the identity of a connecting client, as far as the caller has
// established it.
type Client struct {
	Addr netip.Addr
	// Name is the forward-confirmed reverse-DNS name, lower-case and without
	// a trailing dot; "" when it is unknown.
	Name string
	// Paranoid reports that the PTR name did not forward-confirm to Addr.
	// Such a client has no usable name: Name is ignored, only address
	// patterns and PARANOID can match it.
	Paranoid bool
}

// Verdict is the outcome of a check and the rule that decided it.
type Verdict struct {
	Allowed bool
	// File and Line locate the deciding rule; File is "" when no rule
	// matched and access is granted by default.
	File string
	Line int
	// Pattern is the client pattern, as written, that matched.
	Pattern string
}

// A ParseError is a problem on one line of an access control file.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Table is a parsed pair of hosts.allow and hosts.deny files. It is
// immutable after Parse and safe for concurrent use. A nil *Table has no
// rules and grants everything.
type Table struct {
	files    [2]fileTable // hosts.allow, then hosts.deny
	warnings []string
}

// Parse reads a hosts.allow and a hosts.deny file. A nil reader stands for an
// empty (or absent) file; allowName and denyName name the files in errors,
// warnings and verdicts ("hosts.allow" and "hosts.deny" when empty). Every
// error in both files is reported, joined, each as a *ParseError (or an I/O
// error naming the file).
func Parse(allow, deny io.Reader, allowName, denyName string) (*Table, error) {
	if allowName == "" {
		allowName = "hosts.allow"
	}
	if denyName == "" {
		denyName = "hosts.deny"
	}
	t := &Table{}
	p := &parser{}
	srcs := [2]struct {
		r     io.Reader
		name  string
		allow bool
	}{{allow, allowName, true}, {deny, denyName, false}}
	for i, src := range srcs {
		f := &t.files[i]
		f.init(src.name)
		if src.r == nil {
			continue
		}
		p.file = src.name
		err := readLines(src.r, src.name, func(line int, text string) {
			p.line = line
			if r, ok := p.parseRule(text, src.allow); ok {
				f.add(r)
			}
		})
		if err != nil {
			p.errs = append(p.errs, err)
		}
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	t.warnings = p.warns
	return t, nil
}

// Load reads the named files. An empty path means there is no such file; a
// path that names a missing file is an error, because the operator asked for
// it (tcpd would treat it as empty and silently allow everything).
func Load(allowPath, denyPath string) (*Table, error) {
	var readers [2]io.Reader
	for i, path := range [2]string{allowPath, denyPath} {
		if path == "" {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		readers[i] = f
	}
	return Parse(readers[0], readers[1], allowPath, denyPath)
}

// Warnings returns one line, "file:line: text", for every pattern or option
// that was accepted but is not supported and so never matches or is
// ignored.
func (t *Table) Warnings() []string {
	if t == nil {
		return nil
	}
	return slices.Clone(t.warnings)
}

// Len returns the number of rules in both files.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.files[0].rules) + len(t.files[1].rules)
}

// Check decides whether daemon (normally [Daemon]) may serve client c. It
// does not allocate.
func (t *Table) Check(daemon string, c Client) Verdict {
	if t == nil {
		return Verdict{Allowed: true}
	}
	cv := newClientView(c)
	d := canonicalDaemon(daemon)
	for i := range t.files {
		f := &t.files[i]
		if h, ok := f.match(d, &cv); ok {
			r := &f.rules[h.rule()]
			return Verdict{Allowed: r.allow, File: f.name, Line: r.line, Pattern: h.pat}
		}
	}
	return Verdict{Allowed: true}
}

// Package recipients knows which addresses of the local domains exist: the
// recipients file (one accepted address a line, "@domain" for a domain's
// catch-all) and the aliases file (sendmail's /etc/aliases format). A
// recipient that is in neither is refused at RCPT, which is what makes
// sendmail's BAD_RCPT_THROTTLE a defence against dictionary attacks and
// what keeps the server from accepting mail it would then bounce to a
// forged sender.
//
// Both files are read whole and indexed in maps, so a lookup is O(1) and
// costs no allocation; alias expansion is done once, at load. A Table is
// immutable: a reload builds a new one, and a file with errors never
// replaces a good table.
package recipients

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// maxAliasDepth is sendmail's MaxAliasRecursion: how deep an alias may
// point to further aliases before it is an error (a loop, in practice).
const maxAliasDepth = 10

// maxLine bounds one line (after joining an alias's continuation lines).
const maxLine = 64 << 10

// Target is one address an alias expands to. Domain is "" for a bare
// local name, which stands for that name in the recipient's own domain.
type Target struct {
	Local, Domain string
}

// Table is a loaded recipients file and aliases file.
type Table struct {
	users    map[string]struct{} // "local@domain", lower case
	domains  map[string]struct{} // catch-all domains ("@domain" lines), lower case
	aliases  map[string][]Target // alias name, lower case → final targets
	warnings []string
}

// Match says why an address is known.
type Match int

// Kinds of Match.
const (
	Unknown  Match = iota
	Listed         // a line of the recipients file
	CatchAll       // an "@domain" line of the recipients file
	Alias          // a name of the aliases file
)

func (m Match) String() string {
	return [...]string{"unknown", "listed", "catch-all", "alias"}[m]
}

// LineError is a problem on one line of a file.
type LineError struct {
	File string
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Load reads the recipients file and the aliases file (either may be "").
// localDomains are the domains served here: a recipients line for another
// domain is a warning (it can never match). When remoteTargets is false
// (local Maildir delivery with no relay), an alias pointing outside the
// local domains is an error, since there is nowhere to take it. Every
// problem is reported, each with its file and line.
func Load(recipientsFile, aliasesFile string, localDomains []string, remoteTargets bool) (*Table, error) {
	t := &Table{users: map[string]struct{}{}, domains: map[string]struct{}{}, aliases: map[string][]Target{}}
	local := make(map[string]bool, len(localDomains))
	for _, d := range localDomains {
		local[strings.ToLower(d)] = true
	}
	var errs []error
	if recipientsFile != "" {
		data, err := os.ReadFile(recipientsFile)
		if err == nil {
			err = t.parseRecipients(data, recipientsFile, local)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if aliasesFile != "" {
		data, err := os.ReadFile(aliasesFile)
		if err == nil {
			err = t.parseAliases(data, aliasesFile, local, remoteTargets)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// Warnings are lines found odd but not wrong ("file:line: text").
func (t *Table) Warnings() []string { return append([]string(nil), t.warnings...) }

// Len is the number of listed addresses, catch-all domains and aliases.
func (t *Table) Len() int { return len(t.users) + len(t.domains) + len(t.aliases) }

// Lookup says whether local@domain is a known recipient. For an alias it
// also returns the addresses it expands to (a bare name in the
// recipient's domain has Domain set to domain). The local part is compared
// without regard to ASCII case, as Maildir delivery stores it.
func (t *Table) Lookup(local, domain string) (Match, []Target) {
	var buf [256]byte
	if len(local)+1+len(domain) <= len(buf) {
		key := appendKey(buf[:0], local, domain)
		if _, ok := t.users[string(key)]; ok { // no allocation: the compiler reads the map with the bytes
			return Listed, nil
		}
		if ts, ok := t.aliases[string(lower(buf[:0], local))]; ok {
			return Alias, complete(ts, domain)
		}
		if _, ok := t.domains[string(lower(buf[:0], domain))]; ok {
			return CatchAll, nil
		}
		return Unknown, nil
	}
	// An address longer than any line we keep: compare the slow way.
	key := strings.ToLower(local) + "@" + strings.ToLower(domain)
	if _, ok := t.users[key]; ok {
		return Listed, nil
	}
	if ts, ok := t.aliases[strings.ToLower(local)]; ok {
		return Alias, complete(ts, domain)
	}
	if _, ok := t.domains[strings.ToLower(domain)]; ok {
		return CatchAll, nil
	}
	return Unknown, nil
}

func complete(ts []Target, domain string) []Target {
	out := make([]Target, len(ts))
	for i, tg := range ts {
		if tg.Domain == "" {
			tg.Domain = domain
		}
		out[i] = tg
	}
	return out
}

func appendKey(b []byte, local, domain string) []byte {
	b = lower(b, local)
	b = append(b, '@')
	return lower(b, domain)
}

// lower appends s in ASCII lower case: addresses are compared byte by
// byte, and Unicode case folding would make different keys collide.
func lower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// parseRecipients reads one address a line: "user@domain" or "@domain".
// The rest of a line after the address is ignored, so that the source
// files of Postfix's relay_recipient_maps ("user@domain OK") are read as
// they are.
func (t *Table) parseRecipients(data []byte, path string, local map[string]bool) error {
	// The keys are substrings of one lower-cased copy of the file: a
	// million addresses cost one allocation, not a million.
	text := string(lower(make([]byte, 0, len(data)), string(data)))
	var errs []error
	n := 0
	for line := range strings.Lines(text) {
		n++
		if len(line) > maxLine {
			errs = append(errs, &LineError{path, n, fmt.Sprintf("line longer than %d bytes", maxLine)})
			continue
		}
		line, _, _ = strings.Cut(line, "#")
		addr := firstField(line)
		if addr == "" {
			continue
		}
		at := strings.LastIndexByte(addr, '@')
		if at < 0 {
			errs = append(errs, &LineError{path, n, fmt.Sprintf("%q is not an address: write user@domain, or @domain for every address of a domain", addr)})
			continue
		}
		user, domain := addr[:at], addr[at+1:]
		if !validDomain(domain) {
			errs = append(errs, &LineError{path, n, fmt.Sprintf("%q: invalid domain %q", addr, domain)})
			continue
		}
		if !local[domain] {
			t.warnings = append(t.warnings, fmt.Sprintf("%s:%d: %s is not in local_domains, so this line never matches", path, n, domain))
		}
		if user == "" {
			t.domains[domain] = struct{}{}
			continue
		}
		if !validLocal(user) {
			errs = append(errs, &LineError{path, n, fmt.Sprintf("%q: invalid local part", addr)})
			continue
		}
		t.users[addr] = struct{}{}
	}
	return errors.Join(errs...)
}

// firstField is the first blank-separated word of line, without the
// slice strings.Fields would allocate for every line.
func firstField(line string) string {
	line = strings.TrimLeft(line, " \t\r\n")
	if i := strings.IndexAny(line, " \t\r\n"); i >= 0 {
		return line[:i]
	}
	return line
}

// rawAlias is one line of the aliases file before expansion.
type rawAlias struct {
	line    int
	targets []string
}

// parseAliases reads sendmail's aliases(5) format: "name: target, target",
// continued on lines that start with a blank, '#' comments. Targets are
// addresses or local names (a leading backslash stops further aliasing, as
// in sendmail); programs, files and :include: lists are errors, since
// mxguard delivers only to mailboxes.
func (t *Table) parseAliases(data []byte, path string, local map[string]bool, remoteTargets bool) error {
	raw := map[string]*rawAlias{}
	var order []string
	var errs []error
	bad := func(n int, format string, args ...any) {
		errs = append(errs, &LineError{path, n, fmt.Sprintf(format, args...)})
	}
	entry := func(n int, text string) {
		name, value, ok := strings.Cut(text, ":")
		name = strings.ToLower(strings.TrimSpace(unquote(strings.TrimSpace(name))))
		switch {
		case !ok:
			bad(n, "no ':' after the alias name")
			return
		case name == "" || !validLocal(name):
			bad(n, "invalid alias name %q", name)
			return
		}
		a := &rawAlias{line: n}
		for tg := range strings.SplitSeq(value, ",") {
			tg = strings.TrimSpace(tg)
			switch {
			case tg == "":
				continue
			case strings.HasPrefix(tg, "|"), strings.HasPrefix(tg, "/"), strings.HasPrefix(strings.ToLower(tg), ":include:"):
				bad(n, "alias %s: %q: mxguard delivers to mailboxes only, not to programs, files or :include: lists", name, tg)
				continue
			}
			a.targets = append(a.targets, tg)
		}
		if len(a.targets) == 0 {
			bad(n, "alias %s has no target", name)
			return
		}
		if prev, dup := raw[name]; dup {
			t.warnings = append(t.warnings, fmt.Sprintf("%s:%d: alias %s is defined again (first on line %d); this one is used", path, n, name, prev.line))
		} else {
			order = append(order, name)
		}
		raw[name] = a
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	var cur bytes.Buffer
	start := 0
	flush := func() {
		if cur.Len() > 0 {
			entry(start, cur.String())
			cur.Reset()
		}
	}
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur.Len() == 0 {
				bad(n, "continuation line with no alias before it")
				continue
			}
			if cur.Len()+len(line) > maxLine {
				bad(start, "alias longer than %d bytes", maxLine)
				cur.Reset()
				continue
			}
			cur.WriteByte(' ')
			cur.WriteString(trimmed)
			continue
		}
		flush()
		start = n
		cur.WriteString(line)
	}
	flush()
	if err := sc.Err(); err != nil {
		bad(n+1, "%v", err)
	}
	for _, name := range order {
		ts, err := expand(name, raw, local, remoteTargets)
		if err != nil {
			bad(raw[name].line, "%v", err)
			continue
		}
		t.aliases[name] = ts
	}
	return errors.Join(errs...)
}

// expand flattens alias name into final targets. A target naming the alias
// being expanded, or escaped with a backslash, is final (sendmail's
// "user: \user, archive" keeps a copy in user's own mailbox).
func expand(name string, raw map[string]*rawAlias, local map[string]bool, remote bool) ([]Target, error) {
	var out []Target
	seen := map[Target]bool{}
	var walk func(name string, depth int, chain []string) error
	walk = func(name string, depth int, chain []string) error {
		if depth > maxAliasDepth {
			return fmt.Errorf("alias %s: more than %d levels of aliases (%s): a loop?", chain[0], maxAliasDepth, strings.Join(chain, " → "))
		}
		for _, tg := range raw[name].targets {
			final := strings.HasPrefix(tg, `\`)
			tg = strings.TrimPrefix(tg, `\`)
			var t Target
			if at := strings.LastIndexByte(tg, '@'); at >= 0 {
				t = Target{Local: tg[:at], Domain: strings.ToLower(tg[at+1:])}
				if !validLocal(t.Local) || !validDomain(t.Domain) {
					return fmt.Errorf("alias %s: %q is not an address", chain[0], tg)
				}
				if !local[t.Domain] && !remote {
					return fmt.Errorf("alias %s: %s is not a local domain and no relay is configured, so mail for it could not be delivered", chain[0], tg)
				}
			} else {
				if !validLocal(tg) {
					return fmt.Errorf("alias %s: %q is not a local name or an address", chain[0], tg)
				}
				t = Target{Local: tg}
				lname := strings.ToLower(tg)
				if _, isAlias := raw[lname]; isAlias && !final && lname != name && !contains(chain, lname) {
					if err := walk(lname, depth+1, append(chain, lname)); err != nil {
						return err
					}
					continue
				}
			}
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
		return nil
	}
	if err := walk(name, 1, []string{name}); err != nil {
		return nil, err
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// validLocal accepts a local part as a key: printable ASCII (or UTF-8),
// no blanks, no '@' or ',' that would make the line ambiguous.
func validLocal(s string) bool {
	if s == "" || len(s) > 64*4 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == 0x7f || c == '@' || c == ',' || c == '"' {
			return false
		}
	}
	return true
}

func validDomain(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c >= 0x80) {
			return false
		}
	}
	return !strings.Contains(s, "..")
}

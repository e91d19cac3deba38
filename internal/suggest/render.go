package suggest

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
)

// Files are the files the proposals change, as they are now. Paths are
// absolute: the diff names them so, for `patch -d / -p1`.
type Files struct {
	ConfigPath   string
	Config       []byte
	ConfigExists bool           // false: the diff makes the file
	Cfg          *config.Config // Config parsed: the lines of its keys; nil when there is no file
	AccessPath   string         // "" when there is no access map
	Access       []byte
	DenyPath     string // hosts.deny: the configured one, or where a new one goes
	Deny         []byte
	DenyExists   bool
	// DenyConfigured: the configuration names DenyPath (hosts_deny);
	// otherwise the diff sets hosts_deny to it.
	DenyConfigured bool
}

// commentPrefix starts the comment line above each proposed line.
const commentPrefix = "# mxguard suggest: "

// Render writes the proposals as a unified diff of f, after a summary of
// the figures in comment lines, which patch(1) skips. source says what the
// figures were read from.
func Render(w io.Writer, res Result, f Files, source string) error {
	var head bytes.Buffer
	fmt.Fprintf(&head, "# mxguard suggest: from %s\n", source)
	if len(res.Days) > 0 {
		fmt.Fprintf(&head, "# days: %s to %s (%d); limits from the traffic %s\n", res.Days[0], res.Days[len(res.Days)-1], len(res.Days), res.From)
	}
	var deny []Proposal
	for _, p := range res.Proposals {
		if p.Where == HostsDeny {
			deny = append(deny, p)
			continue
		}
		name := p.Key
		if p.Where == AccessMap {
			name = "access " + p.Key
		}
		if p.Same() {
			fmt.Fprintf(&head, "# %s = %d, as now: %s\n", name, p.Value, p.Why)
		} else {
			fmt.Fprintf(&head, "# %s = %d (now %s): %s\n", name, p.Value, nowText(p.Current), p.Why)
		}
	}
	fmt.Fprintf(&head, "# hosts.deny: %d lines proposed\n", len(deny))
	for _, n := range res.Notes {
		fmt.Fprintf(&head, "# note: %s\n", n)
	}

	cfgEdits, err := configEdits(res.Proposals, f)
	if err != nil {
		return err
	}
	accEdits, err := accessEdits(res.Proposals, f)
	if err != nil {
		return err
	}
	denyEdits := hostsDenyEdits(deny, f)
	if len(cfgEdits)+len(accEdits)+len(denyEdits) == 0 {
		head.WriteString("# nothing to change\n")
		_, err := w.Write(head.Bytes())
		return err
	}
	head.WriteString("# apply with: patch -d / -p1 < this-file; then mxguard check, and mxguard reload\n")
	if _, err := w.Write(head.Bytes()); err != nil {
		return err
	}
	if err := writeDiff(w, f.ConfigPath, f.Config, f.ConfigExists, cfgEdits); err != nil {
		return err
	}
	if err := writeDiff(w, f.AccessPath, f.Access, true, accEdits); err != nil {
		return err
	}
	return writeDiff(w, f.DenyPath, f.Deny, f.DenyExists, denyEdits)
}

func nowText(v int64) string {
	if v == 0 {
		return "0, no limit"
	}
	return strconv.FormatInt(v, 10)
}

// reKeyLine matches a line that sets one key: indentation, the key (bare,
// or dotted with its table), " = ".
var reKeyLine = regexp.MustCompile(`^(\s*)((?:[A-Za-z0-9_-]+\s*\.\s*)?[A-Za-z0-9_-]+)\s*=`)

// configEdits sets each changed key of the TOML file in its line, or adds
// it to its table, and hosts_deny when a new hosts.deny is proposed.
func configEdits(props []Proposal, f Files) ([]edit, error) {
	lines, _ := splitLines(f.Config)
	line := func(key string) int {
		if f.Cfg == nil {
			return 0
		}
		return f.Cfg.Line(key)
	}
	var edits []edit
	// Keys of [limits] the file does not set: where they go.
	var add []string
	for _, p := range props {
		if p.Where != Config || p.Same() {
			continue
		}
		section, name, _ := strings.Cut(p.Key, ".")
		comment := commentPrefix + p.Why
		if n := line(p.Key); n > 0 {
			m := reKeyLine.FindStringSubmatch(lines[n-1])
			if m == nil || strings.ReplaceAll(m[2], " ", "") != name && strings.ReplaceAll(m[2], " ", "") != p.Key {
				return nil, fmt.Errorf("%s:%d: %s is not on a line of its own; set it to %d by hand", f.ConfigPath, n, p.Key, p.Value)
			}
			edits = append(edits, edit{at: n - 1, del: 1, ins: []string{m[1] + comment, fmt.Sprintf("%s%s = %d", m[1], m[2], p.Value)}})
			continue
		}
		n := line(section)
		switch {
		case n == 0:
			add = append(add, comment, fmt.Sprintf("%s = %d", name, p.Value))
		case isHeader(lines[n-1], section):
			edits = append(edits, edit{at: n, ins: []string{comment, fmt.Sprintf("%s = %d", name, p.Value)}})
		case strings.HasPrefix(strings.TrimSpace(lines[n-1]), section+"."):
			// Dotted keys at the top level: one more beside them.
			ind := lines[n-1][:len(lines[n-1])-len(strings.TrimLeft(lines[n-1], " \t"))]
			edits = append(edits, edit{at: n, ins: []string{ind + comment, fmt.Sprintf("%s%s = %d", ind, p.Key, p.Value)}})
		default:
			return nil, fmt.Errorf("%s:%d: [%s] is written inline; add %s = %d there by hand", f.ConfigPath, n, section, name, p.Value)
		}
	}
	var atEnd []string
	if !f.DenyConfigured && hasDeny(props) {
		// A path in the file is relative to the file's directory.
		path := f.DenyPath
		if filepath.Dir(path) == filepath.Dir(f.ConfigPath) {
			path = filepath.Base(path)
		}
		set := []string{commentPrefix + "the new hosts.deny below", fmt.Sprintf("hosts_deny = %q", path)}
		// A top-level key goes before the first table.
		first := 0
		for _, s := range config.Sections[1:] {
			if n := line(s); n > 0 && isHeader(lines[n-1], s) && (first == 0 || n < first) {
				first = n
			}
		}
		if first > 0 {
			edits = append(edits, edit{at: first - 1, ins: append(set, "")})
		} else {
			atEnd = append(atEnd, set...)
		}
	}
	if len(add) > 0 {
		if len(lines)+len(atEnd) > 0 {
			atEnd = append(atEnd, "")
		}
		atEnd = append(atEnd, "[limits]")
		atEnd = append(atEnd, add...)
	}
	if len(atEnd) > 0 {
		edits = append(edits, edit{at: len(lines), ins: atEnd})
	}
	return edits, nil
}

func hasDeny(props []Proposal) bool {
	for _, p := range props {
		if p.Where == HostsDeny {
			return true
		}
	}
	return false
}

// isHeader reports whether line opens [section].
func isHeader(line, section string) bool {
	s := strings.TrimSpace(line)
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") || strings.HasPrefix(s, "[[") {
		return false
	}
	return strings.TrimSpace(s[1:len(s)-1]) == section
}

// accessEdits sets the access map's default ClientRate: and ClientConn:
// entries in their lines.
func accessEdits(props []Proposal, f Files) ([]edit, error) {
	var want []Proposal
	for _, p := range props {
		if p.Where == AccessMap && !p.Same() {
			want = append(want, p)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	m, err := accessmap.Parse(bytes.NewReader(f.Access), f.AccessPath)
	if err != nil {
		return nil, err
	}
	lines, _ := splitLines(f.Access)
	var edits []edit
	for _, p := range want {
		n := 0
		for e := range m.All() {
			if e.Key == "" && e.Tag+":" == p.Key {
				n = e.Line
			}
		}
		if n == 0 || n > len(lines) {
			return nil, fmt.Errorf("%s: no %s entry to change", f.AccessPath, p.Key)
		}
		old := lines[n-1]
		lhs := strings.TrimLeft(old, " \t")
		ind := old[:len(old)-len(lhs)]
		sp := strings.IndexAny(lhs, " \t")
		if sp < 0 {
			return nil, fmt.Errorf("%s:%d: %s has no value", f.AccessPath, n, p.Key)
		}
		rest := lhs[sp:]
		gap := rest[:len(rest)-len(strings.TrimLeft(rest, " \t"))]
		edits = append(edits, edit{at: n - 1, del: 1, ins: []string{ind + commentPrefix + p.Why, fmt.Sprintf("%s%s%s%d", ind, lhs[:sp], gap, p.Value)}})
	}
	return edits, nil
}

// hostsDenyEdits appends the proposed lines to hosts.deny, under the daemon
// name the file already uses (sendmail's, as the seed's), else mxguard's.
func hostsDenyEdits(deny []Proposal, f Files) []edit {
	if len(deny) == 0 {
		return nil
	}
	lines, _ := splitLines(f.Deny)
	daemon := "mxguard"
	if reSendmailRule.Match(f.Deny) {
		daemon = "sendmail"
	}
	var ins []string
	if len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) != "" {
		ins = append(ins, "")
	}
	for _, p := range deny {
		ins = append(ins, commentPrefix+p.Why, daemon+": "+p.Key)
	}
	return []edit{{at: len(lines), ins: ins}}
}

var reSendmailRule = regexp.MustCompile(`(?m)^[ \t]*sendmail[ \t]*:`)

// Package sendmailimport translates a sendmail.mc into an mxguard
// configuration file.
//
// mxguard's option names are sendmail's in snake_case, so most of the work
// is mechanical: confMAX_DAEMON_CHILDREN becomes [limits]
// max_daemon_children, confTO_COMMAND becomes [timeouts] command, and the
// FEATUREs that shape connection handling (access_db, delay_checks,
// ratecontrol, conncontrol, greet_pause) become the keys that do the same.
// The access map and hosts.deny keep their native formats and are only
// referenced by path. Everything else (mailers, OSTYPE, rulesets, options
// mxguard has no counterpart for) is listed back to the caller with its line
// number rather than guessed at.
//
// The DNS blocklist FEATUREs, dnsbl and enhdnsbl (as sendmail 8.17's
// cf/README has them), become one [dnsbl] section: each zone a site of
// weight 1, threshold 1 (any one list rejects, as in sendmail), and the
// action reject, or reject_rcpt under FEATURE(`delay_checks'), which moves
// sendmail's check to RCPT. enhdnsbl's result patterns become site filters
// (127.0.0.2. is 127.0.0.2, 127.0.0.$-. is 127.0.0.[0..255], two results
// one filter 127.0.0.[2;4] where they can be, else one site each).
// sendmail matches a pattern against the whole answer and its trailing dot,
// so a pattern without it, such as 127.0.0., never matched there and is
// dropped, not read as a prefix. Not carried over, and listed: the
// rejection message (mxguard's reply names no list, on purpose), the `t'
// that made a failed lookup 451 (mxguard counts a list that fails as not
// listing), and patterns with classes or macros; a FEATURE that discards or
// quarantines, or has no usable zone, is left out. Unlike sendmail, mxguard
// also asks the lists about IPv6 clients, and a site without a filter does
// not count answers outside 127.0.0.0/8 or in 127.255.255.0/24, by which
// lists refuse a query.
package sendmailimport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mxguard/mxguard/internal/config"
)

// maxInput bounds the sendmail.mc read; real ones are a few kilobytes.
const maxInput = 1 << 20

// Translate reads a sendmail.mc from mc and returns an equivalent mxguard
// configuration in TOML, which config.Parse accepts. accessPath and
// hostsDenyPath, when not "", are the access map (the text source of
// access.db) and hosts.deny to reference; they are written as given, and
// since relative paths in a configuration file are relative to that file's
// directory, callers should pass absolute paths.
//
// untranslated lists, one per entry and in line order, what the output does
// not carry over faithfully, as "FILE:LINE: TEXT: reason". err is set only
// when mc cannot be read or is not well-formed m4.
func Translate(mc io.Reader, accessPath, hostsDenyPath string) (tomlText []byte, untranslated []string, err error) {
	name := "sendmail.mc"
	if f, ok := mc.(interface{ Name() string }); ok && f.Name() != "" {
		name = filepath.Base(f.Name())
	}
	src, err := io.ReadAll(io.LimitReader(mc, maxInput+1))
	if err != nil {
		return nil, nil, err
	}
	if len(src) > maxInput {
		return nil, nil, fmt.Errorf("%s: larger than %d bytes; not a sendmail.mc", name, maxInput)
	}
	stmts, err := parseMC(string(src))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}

	t := &translator{file: name, out: make(map[string]*entry)}
	for _, st := range stmts {
		t.statement(st)
	}
	if accessPath != "" {
		if err := t.path("access_map", accessPath, "--access"); err != nil {
			return nil, nil, err
		}
	} else if t.accessDB != nil {
		t.skip(*t.accessDB, "not translated (pass the access file, the text source of access.db, to import it as access_map)")
	}
	if hostsDenyPath != "" {
		if err := t.path("hosts_deny", hostsDenyPath, "--hosts-deny"); err != nil {
			return nil, nil, err
		}
	}
	t.finishControl()
	t.finishDomains()
	t.finishDNSBL()

	slices.SortStableFunc(t.skipped, func(a, b note) int { return a.line - b.line })
	text := t.render(accessPath, hostsDenyPath)
	if _, err := config.Parse(text, ""); err != nil {
		// Every value was checked on its own, so this is a bug here.
		return nil, nil, fmt.Errorf("generated configuration does not parse: %w", err)
	}
	for _, n := range t.skipped {
		untranslated = append(untranslated, n.text)
	}
	return text, untranslated, nil
}

// An entry is one key of the generated file.
type entry struct {
	line    int      // line of the first source; 0 for command-line flags
	key     string   // "limits.greet_pause"
	value   string   // TOML literal
	sources []string // "sendmail.mc:12: define(...)dnl", or a command-line flag
	notes   []string // comment lines written above the key
}

type note struct {
	line int
	text string
}

type translator struct {
	file    string
	out     map[string]*entry
	skipped []note

	accessDB *statement // FEATURE(`access_db'), pending the access path
	// ratecontrol and conncontrol each say whether to terminate; mxguard
	// has one switch for both.
	control []controlFeature
	// LOCAL_DOMAIN calls add up.
	domains []string
	// The DNS blocklist FEATUREs add up to one [dnsbl] section, whose
	// action depends on FEATURE(`delay_checks') wherever it is.
	dnsblLists  []*dnsblList
	dnsblFrom   []statement
	delayChecks *statement
}

type controlFeature struct {
	st        statement
	terminate bool
}

func (t *translator) source(st statement) string {
	return t.file + ":" + strconv.Itoa(st.line) + ": " + st.text
}

// skip lists st as not translated. The reason may quote arguments, which
// can span lines in the .mc: collapse keeps every entry on one line.
func (t *translator) skip(st statement, reason string) {
	t.skipped = append(t.skipped, note{st.line, t.source(st) + ": " + collapse(reason)})
}

// set records key = value, checking it the way mxguard will read it. A
// later definition replaces an earlier one, as it does in m4.
func (t *translator) set(st statement, key, value string, notes ...string) {
	t.setFrom([]statement{st}, key, value, notes...)
}

// setFrom records key = value from several statements, named in line
// order; a refusal is listed against the first. It reports whether the
// key was written.
func (t *translator) setFrom(sts []statement, key, value string, notes ...string) bool {
	st := sts[0]
	if k, ok := config.LookupKey(key); ok && k.Unused != "" {
		// Written, it would only make every start warn.
		t.skip(st, "not translated (no effect in mxguard: "+k.Unused+")")
		return false
	}
	if err := checkValue(key, value); err != nil {
		t.skip(st, "not translated: "+err.Error())
		return false
	}
	if old, ok := t.out[key]; ok {
		for _, s := range old.sources {
			t.skipped = append(t.skipped, note{old.line, s + ": overridden by line " + strconv.Itoa(st.line)})
		}
	}
	e := &entry{line: st.line, key: key, value: value, notes: notes}
	for _, s := range sts {
		e.sources = append(e.sources, t.source(s))
	}
	t.out[key] = e
	return true
}

func (t *translator) path(key, path, flag string) error {
	if !utf8.ValidString(path) || strings.ContainsAny(path, "\x00\n") {
		return fmt.Errorf("%s %q: not a usable path", flag, path)
	}
	value := quote(path)
	if err := checkValue(key, value); err != nil {
		return fmt.Errorf("%s: %v", flag, err)
	}
	e := &entry{key: key, value: value, sources: []string{"from " + flag}}
	if key == "access_map" && t.accessDB != nil {
		e.sources = []string{t.source(*t.accessDB)}
	}
	t.out[key] = e
	return nil
}

// checkValue parses a one-key document with the real configuration parser,
// so that a value mxguard would refuse is never written.
func checkValue(key, value string) error {
	section, k, ok := strings.Cut(key, ".")
	doc := key + " = " + value + "\n"
	if ok {
		doc = "[" + section + "]\n" + k + " = " + value + "\n"
	}
	_, err := config.Parse([]byte(doc), "")
	var errs config.Errors
	if errors.As(err, &errs) && len(errs) > 0 {
		return errors.New(errs[0].Msg)
	}
	return err
}

// timeouts maps confTO_* names to [timeouts] keys. All take sendmail's
// time syntax with minutes as the default unit.
var timeouts = map[string]string{
	"confTO_INITIAL": "initial", "confTO_CONNECT": "connect", "confTO_ACONNECT": "aconnect",
	"confTO_ICONNECT": "iconnect", "confTO_HELO": "helo", "confTO_MAIL": "mail",
	"confTO_RCPT": "rcpt", "confTO_DATAINIT": "datainit", "confTO_DATABLOCK": "datablock",
	"confTO_DATAFINAL": "datafinal", "confTO_RSET": "rset", "confTO_QUIT": "quit",
	"confTO_MISC": "misc", "confTO_COMMAND": "command", "confTO_CONTROL": "control",
	"confTO_LHLO": "lhlo", "confTO_AUTH": "auth", "confTO_STARTTLS": "starttls",
}

// counts maps the integer defines to [limits] keys.
var counts = map[string]string{
	"confMAX_DAEMON_CHILDREN":      "limits.max_daemon_children",
	"confCONNECTION_RATE_THROTTLE": "limits.connection_rate_throttle",
	"confBAD_RCPT_THROTTLE":        "limits.bad_rcpt_throttle",
	"confMAX_RCPTS_PER_MESSAGE":    "limits.max_rcpts_per_message",
}

// Reasons for statements mxguard has no counterpart for, by macro name.
var reasons = map[string]string{
	"MAILER":         "not translated (mxguard delivers to Maildir or a relay)",
	"OSTYPE":         "not translated (mxguard needs no OS-specific settings)",
	"DOMAIN":         "not translated (m4 domain files are not read; translate their defines separately)",
	"HACK":           "not translated (m4 hacks are not read)",
	"MASQUERADE_AS":  "not translated (mxguard does not rewrite addresses)",
	"LOCAL_CONFIG":   "not translated (raw sendmail.cf text follows)",
	"LOCAL_RULESETS": "not translated (rulesets have no mxguard equivalent)",
}

func (t *translator) statement(st statement) {
	switch {
	case !st.call && st.name == "":
		t.skip(st, "not translated")
	case st.call && (st.name == "divert" || st.name == "VERSIONID"):
		// m4 bookkeeping; nothing to translate.
	case st.call && st.name == "include" && len(st.args) == 1 && strings.HasSuffix(st.args[0], "/cf.m4"):
		// The standard prologue that loads sendmail's m4 library.
	case st.call && st.name == "define":
		t.define(st)
	case st.call && st.name == "FEATURE":
		t.feature(st)
	case st.call && st.name == "LOCAL_DOMAIN":
		t.localDomain(st)
	default:
		if r, ok := reasons[st.name]; ok {
			t.skip(st, r)
			return
		}
		t.skip(st, "not translated")
	}
}

func (t *translator) define(st statement) {
	if len(st.args) != 2 {
		t.skip(st, "not translated (define takes a name and a value)")
		return
	}
	name, val := st.args[0], strings.TrimSpace(st.args[1])
	if key, ok := counts[name]; ok {
		n, err := strconv.ParseUint(val, 10, 31)
		if err != nil {
			t.skip(st, "not translated: "+strconv.Quote(val)+" is not a non-negative number")
			return
		}
		t.set(st, key, strconv.FormatUint(n, 10))
		return
	}
	if key, ok := timeouts[name]; ok {
		d, err := sendmailDuration(val, time.Minute)
		if err != nil {
			t.skip(st, "not translated: "+err.Error())
			return
		}
		if d == 0 {
			t.skip(st, "not translated (sendmail's 0 means no timeout; mxguard bounds every phase)")
			return
		}
		t.set(st, "timeouts."+key, quote(config.FormatDuration(d)))
		return
	}
	switch name {
	case "confCONNECTION_RATE_WINDOW_SIZE":
		d, err := sendmailDuration(val, time.Second)
		if err != nil {
			t.skip(st, "not translated: "+err.Error())
			return
		}
		t.set(st, "limits.connection_rate_window_size", quote(config.FormatDuration(d)))
	case "confMAX_MESSAGE_SIZE":
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil || n < 0 {
			t.skip(st, "not translated: "+strconv.Quote(val)+" is not a byte count")
			return
		}
		t.set(st, "limits.max_message_size", quote(config.FormatSize(n)))
	case "confTO_QUEUERETURN", "confTO_QUEUERETURN_NORMAL":
		d, err := sendmailDuration(val, 24*time.Hour)
		if err != nil {
			t.skip(st, "not translated: "+err.Error())
			return
		}
		t.set(st, "delivery.queue_lifetime", quote(config.FormatDuration(d)))
	case "ALIAS_FILE":
		// sendmail takes a comma-separated list of maps; a plain file is
		// what mxguard reads.
		if strings.ContainsAny(val, ",:") {
			t.skip(st, "not translated (a list of maps or a map type; set recipients.aliases to one plain aliases file)")
			return
		}
		t.set(st, "recipients.aliases", quote(val))
	case "confDOMAIN_NAME":
		if strings.Contains(val, "$") {
			t.skip(st, "not translated (the value uses sendmail macros; set hostname by hand)")
			return
		}
		t.set(st, "hostname", quote(val))
	default:
		t.skip(st, "not translated (no mxguard equivalent)")
	}
}

func (t *translator) feature(st statement) {
	if len(st.args) == 0 {
		t.skip(st, "not translated (FEATURE without a name)")
		return
	}
	name, args := st.args[0], st.args[1:]
	switch name {
	case "access_db":
		// Resolved once the whole file is read: the access path comes
		// from the caller, not the .mc (which names the hashed .db).
		t.accessDB = &st
	case "delay_checks":
		var notes []string
		for _, a := range args {
			switch strings.TrimSpace(a) {
			case "friend":
				notes = append(notes, "`friend': Spam: FRIEND entries in the access map are honoured.")
			case "":
			default:
				t.skip(st, "argument `"+a+"' not translated (mxguard honours only Spam: FRIEND)")
			}
		}
		t.set(st, "delay_checks", "true", notes...)
		t.delayChecks = &st
	case "dnsbl", "enhdnsbl":
		t.dnsblFeature(st, name, args)
	case "ratecontrol", "conncontrol":
		cf := controlFeature{st: st}
		for _, a := range args {
			switch strings.TrimSpace(a) {
			case "terminate":
				cf.terminate = true
			case "nodelay", "":
				// nodelay is the only way mxguard checks: at connect.
			default:
				t.skip(st, "argument `"+a+"' not translated")
			}
		}
		t.control = append(t.control, cf)
	case "greet_pause":
		t.greetPause(st, args)
	case "use_cw_file":
		t.skip(st, "not translated (list the domains of local-host-names in local_domains)")
	default:
		t.skip(st, "not translated (no mxguard equivalent)")
	}
}

// finishControl turns the ratecontrol/conncontrol FEATUREs into the one
// terminate switch mxguard has.
func (t *translator) finishControl() {
	if len(t.control) == 0 {
		return
	}
	terminate := t.control[0].terminate
	e := &entry{key: "limits.terminate", value: strconv.FormatBool(terminate)}
	for _, cf := range t.control {
		if cf.terminate != terminate {
			t.skip(cf.st, fmt.Sprintf("conflicts with line %d: mxguard has one terminate switch for both; using %t", t.control[0].st.line, terminate))
			continue
		}
		e.sources = append(e.sources, t.source(cf.st))
	}
	if !terminate {
		e.notes = append(e.notes, "Without `terminate' over-limit clients get 452 to MAIL and RCPT instead of 421 and a closed connection.")
	}
	t.out[e.key] = e
}

func (t *translator) greetPause(st statement, args []string) {
	if len(args) == 0 || strings.TrimSpace(args[0]) == "" {
		// Only the access map's GreetPause: entries set a pause.
		return
	}
	a := strings.TrimSpace(args[0])
	ms, err := strconv.ParseUint(a, 10, 63)
	if err != nil {
		t.skip(st, "not translated: "+strconv.Quote(a)+" is not a number of milliseconds")
		return
	}
	const maxMS = uint64(config.MaxGreetPause / time.Millisecond)
	if ms > maxMS {
		t.skip(st, "clamped to 5m, the RFC 5321 greeting timeout (as sendmail does)")
		t.set(st, "limits.greet_pause", quote(config.FormatDuration(config.MaxGreetPause)),
			fmt.Sprintf("%d ms exceeds RFC 5321's 5 minute greeting timeout; clamped as sendmail does.", ms))
		return
	}
	t.set(st, "limits.greet_pause", quote(config.FormatDuration(time.Duration(ms)*time.Millisecond)))
}

func (t *translator) localDomain(st statement) {
	var added []string
	for _, a := range st.args {
		added = append(added, strings.Fields(a)...)
	}
	// Only the new domains are checked, so that many LOCAL_DOMAIN lines
	// cost linear time.
	if err := checkValue("local_domains", domainList(added)); err != nil {
		t.skip(st, "not translated: "+err.Error())
		return
	}
	t.domains = append(t.domains, added...)
	e, ok := t.out["local_domains"]
	if !ok {
		e = &entry{line: st.line, key: "local_domains"}
		t.out["local_domains"] = e
	}
	e.sources = append(e.sources, t.source(st))
}

// finishDomains writes the domains of every LOCAL_DOMAIN line, once: made
// at each line, the value cost quadratic time in a long file.
func (t *translator) finishDomains() {
	if e, ok := t.out["local_domains"]; ok {
		e.value = domainList(t.domains)
	}
}

func domainList(domains []string) string {
	list := make([]string, len(domains))
	for i, d := range domains {
		list[i] = quote(d)
	}
	return "[" + strings.Join(list, ", ") + "]"
}

// maxTime bounds sendmail times; nothing sensible is longer than a century.
const maxTime = 100 * 365 * 24 * time.Hour

// sendmailDuration parses sendmail's time syntax (convtime): numbers each
// followed by an optional unit s, m, h, d or w, as in "30s" or "1h30m"; a
// number without a unit is in def, which depends on the option.
func sendmailDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty time value")
	}
	var total time.Duration
	for rest := s; rest != ""; {
		i := 0
		for i < len(rest) && '0' <= rest[i] && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid time %q", s)
		}
		n, err := strconv.ParseInt(rest[:i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("time %q is too large", s)
		}
		unit := def
		rest = rest[i:]
		if rest != "" && !('0' <= rest[0] && rest[0] <= '9') {
			switch rest[0] {
			case 's':
				unit = time.Second
			case 'm':
				unit = time.Minute
			case 'h':
				unit = time.Hour
			case 'd':
				unit = 24 * time.Hour
			case 'w':
				unit = 7 * 24 * time.Hour
			default:
				return 0, fmt.Errorf("invalid time unit %q in %q", rest[0], s)
			}
			rest = rest[1:]
		}
		// Checked before multiplying, which could overflow.
		if time.Duration(n) > (maxTime-total)/unit {
			return 0, fmt.Errorf("time %q is too large", s)
		}
		total += time.Duration(n) * unit
	}
	return total, nil
}

// quote writes s as a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func (t *translator) render(accessPath, hostsDenyPath string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# mxguard configuration generated by `mxguard import-sendmail` from %s.\n", commentText(t.file))
	if accessPath != "" {
		fmt.Fprintf(&b, "# Access map: %s\n", commentText(accessPath))
	}
	if hostsDenyPath != "" {
		fmt.Fprintf(&b, "# hosts.deny: %s\n", commentText(hostsDenyPath))
	}
	b.WriteString("# Each key names the sendmail line it comes from. Keys not set here keep\n")
	b.WriteString("# mxguard's defaults: listen is 127.0.0.1:2525, where sendmail listens on\n")
	b.WriteString("# port 25 of every address; review listen and local_domains before use.\n")
	b.WriteString(recipientsNote)
	b.WriteString("\n")

	section := ""
	for _, k := range config.Keys() { // the order of testdata/full.toml and SPEC.md
		key := k.Name
		e, ok := t.out[key]
		if !ok {
			continue
		}
		if sec, k, nested := strings.Cut(key, "."); nested {
			if sec != section {
				fmt.Fprintf(&b, "\n[%s]\n", sec)
				section = sec
			}
			key = k
		}
		for _, n := range e.notes {
			fmt.Fprintf(&b, "# %s\n", commentText(n))
		}
		sources := make([]string, len(e.sources))
		for i, s := range e.sources {
			sources[i] = commentText(s)
		}
		fmt.Fprintf(&b, "%-36s # %s\n", key+" = "+e.value, strings.Join(sources, "; "))
	}

	if len(t.skipped) > 0 {
		b.WriteString("\n# Not translated:\n")
		for _, n := range t.skipped {
			fmt.Fprintf(&b, "#   %s\n", commentText(n.text))
		}
	}
	return b.Bytes()
}

// recipientsNote tells how to carry sendmail's local users over: sendmail
// knows them from the password file and the virtusertable, which are not
// configuration to translate but data to export.
const recipientsNote = `#
# Recipients: like sendmail, mxguard refuses unknown local users at RCPT
# (550 5.1.1), so list the users in a [recipients] file, one address a
# line. Exported from sendmail's sources, for example:
#   getent passwd | awk -F: '$3 >= 1000 && $7 !~ /nologin|false/ {print $1 "@example.org"}' >> recipients
#   awk '!/^#/ && NF {print $1}' /etc/mail/virtusertable >> recipients   # "@domain" lines are catch-alls
# and point [recipients] file at it; the aliases file is read as it is.
`

// commentText makes s safe inside a one-line TOML comment.
func commentText(s string) string {
	return collapse(s)
}

// Package accessmap reads sendmail's access database in its text form (the
// file makemap turns into access.db) and answers the lookups sendmail's
// rulesets make against it, in the same order.
//
// A line is "Tag:key value": Connect: entries decide on the client,
// From:, To: and Spam: on envelope addresses, ClientRate:, ClientConn: and
// GreetPause: give per-client numbers. Keys are case-insensitive. Untagged
// entries, which sendmail still honours for Connect:, From: and To:, are read
// too; tags mxguard does not use (AuthInfo:, TLS_Clt: ...) are kept and
// reported by Warnings, so that one file can serve both programs.
//
// Beyond sendmail, a key may be a CIDR network (Connect:10.0.0.0/8,
// Connect:IPv6:2001:db8::/32). Sendmail's dotted keys (1.2.3) and partial
// IPv6 keys (IPv6:2001:db8) are networks too, /24 and /32 here, and among all
// the address keys of a tag the longest matching prefix wins: for sendmail's
// own keys that is exactly the order sendmail tries them in.
//
// A Map is immutable once parsed and safe for concurrent use; to reload,
// parse the file again and swap the pointer. Lookups cost one hash probe per
// label of the host name and per prefix length present in the map, never a
// scan, and allocate nothing: they run for every connection of a flood.
package accessmap

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/mxguard/mxguard/internal/netmap"
)

// Tags mxguard acts on.
const (
	TagConnect    = "Connect"
	TagFrom       = "From"
	TagTo         = "To"
	TagSpam       = "Spam"
	TagClientRate = "ClientRate"
	TagClientConn = "ClientConn"
	TagGreetPause = "GreetPause"
)

// Indexes of the known tags in Map.known.
const (
	tConnect = iota
	tFrom
	tTo
	tSpam
	tClientRate
	tClientConn
	tGreetPause
	numTags
)

// maxGreetPause is sendmail's cap on a greeting pause, in milliseconds:
// RFC 2821's five minutes for the initial 220.
const maxGreetPause = 300000

// Limits on what Parse reads and reports: no access line is anywhere near
// maxLine long, and past maxErrors the file is likely not an access map at
// all, so the rest of its errors are counted, not listed.
const (
	maxLine   = 64 << 10
	maxErrors = 50
)

// tagIndex returns the index of a known tag, matched without regard to case,
// or -1.
func tagIndex(tag string) int {
	switch tag { // the constants callers pass: no folding needed
	case TagConnect:
		return tConnect
	case TagFrom:
		return tFrom
	case TagTo:
		return tTo
	case TagSpam:
		return tSpam
	case TagClientRate:
		return tClientRate
	case TagClientConn:
		return tClientConn
	case TagGreetPause:
		return tGreetPause
	}
	for i := range numTags {
		if strings.EqualFold(tag, tagName(i)) {
			return i
		}
	}
	return -1
}

// tagName returns the canonical spelling of known tag i.
func tagName(i int) string {
	return [numTags]string{TagConnect, TagFrom, TagTo, TagSpam, TagClientRate, TagClientConn, TagGreetPause}[i]
}

// Entry is one line of the access map.
type Entry struct {
	Tag   string // canonical spelling for a known tag ("ClientRate"), as written for another, "" if untagged
	Key   string // lower-case; "" for the default entry "Tag:"
	Value string // as written, without surrounding blanks
	Line  int
}

// String returns the left-hand side as sendmail would look it up, such as
// "Connect:10.1" (for a log line saying which entry matched).
func (e Entry) String() string {
	if e.Tag == "" {
		return e.Key
	}
	return e.Tag + ":" + e.Key
}

// Action parses the entry's value; see ParseAction.
func (e Entry) Action() (Action, error) { return ParseAction(e.Value) }

// Map is a parsed access map.
type Map struct {
	name     string
	entries  []Entry
	skip     []bool  // entries[i].Value is SKIP
	num      []int32 // value of a numeric entry, -1 for others
	known    [numTags]*table
	other    map[string]*table // tags mxguard does not use, by lower-case name
	warnings []string
}

// table indexes the entries of one tag. Values are indexes into Map.entries.
type table struct {
	names    map[string]int32  // host and domain names, addresses, user@
	dotted   bool              // some name starts with ".": lookupdotdomain keys
	nets     netmap.Map[int32] // address keys
	literals netmap.Map[int32] // [address] keys: a client without a name, a domain literal
	def      int32             // the "Tag:" entry, or -1
}

func newTable() *table { return &table{def: -1} }

func (t *table) get(k parsedKey) (int32, bool) {
	switch k.kind {
	case keyDefault:
		return t.def, t.def >= 0
	case keyNet:
		return t.nets.Get(k.prefix)
	case keyLiteral:
		return t.literals.Get(k.prefix)
	}
	i, ok := t.names[k.name]
	return i, ok
}

func (t *table) set(k parsedKey, i int32) {
	switch k.kind {
	case keyDefault:
		t.def = i
	case keyNet:
		t.nets.Set(k.prefix, i)
	case keyLiteral:
		t.literals.Set(k.prefix, i)
	default:
		if t.names == nil {
			t.names = make(map[string]int32)
		}
		t.names[k.name] = i
		if strings.HasPrefix(k.name, ".") {
			t.dotted = true
		}
	}
}

func (t *table) remap(f func(int32) int32) {
	for k, v := range t.names {
		t.names[k] = f(v)
	}
	for p, v := range t.nets.All() {
		t.nets.Set(p, f(v))
	}
	for p, v := range t.literals.All() {
		t.literals.Set(p, f(v))
	}
	if t.def >= 0 {
		t.def = f(t.def)
	}
}

// Name returns the name the map was parsed under (its file's path for Load).
func (m *Map) Name() string { return m.name }

// Len returns the number of entries, not counting those a later duplicate
// replaced.
func (m *Map) Len() int { return len(m.entries) }

// Warnings returns what Parse found odd but not wrong: duplicate keys, tags
// mxguard does not use, keys that can never match, deprecated forms. Each
// names its line.
func (m *Map) Warnings() []string { return append([]string(nil), m.warnings...) }

// All yields the entries in file order.
func (m *Map) All() iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		for _, e := range m.entries {
			if !yield(e) {
				return
			}
		}
	}
}

// LineError is an error on one line of an access map.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Load parses the access map in the file at path.
func Load(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}

// Parse reads an access map in makemap's text form. name is used in error
// messages and warnings. Parse reports every error it finds (up to a limit),
// each as a *LineError, joined with errors.Join; a map with any error is not
// returned, so that a reload keeps the map in use.
func Parse(r io.Reader, name string) (*Map, error) {
	p := &parser{name: name, m: &Map{name: name}, tagSeen: map[string]*tagUse{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	n := 0
	for sc.Scan() {
		n++
		p.parseLine(n, sc.Text())
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line longer than %d bytes", maxLine)
		}
		p.errs = append(p.errs, &LineError{File: name, Line: n + 1, Err: err})
	}
	if more := len(p.errs) - maxErrors; more > 0 {
		p.errs = append(p.errs[:maxErrors:maxErrors], fmt.Errorf("%s: %d more errors not shown", name, more))
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	p.finish()
	return p.m, nil
}

// parser holds the state of one Parse. Until finish, entries holds every
// line's entry and tables point into it; finish drops the ones a duplicate
// replaced.
type parser struct {
	name     string
	m        *Map
	entries  []Entry
	keys     []parsedKey
	dead     []bool
	skip     []bool
	num      []int32
	untagged []int32
	tagSeen  map[string]*tagUse // unknown tags, by lower-case name
	tagOrder []string
	errs     []error
}

type tagUse struct {
	spelling string
	line     int
	count    int
}

func (p *parser) errorf(line int, format string, args ...any) {
	p.errs = append(p.errs, &LineError{File: p.name, Line: line, Err: fmt.Errorf(format, args...)})
}

func (p *parser) warnf(line int, format string, args ...any) {
	p.m.warnings = append(p.m.warnings, fmt.Sprintf("%s:%d: ", p.name, line)+fmt.Sprintf(format, args...))
}

func (p *parser) parseLine(n int, line string) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return
	}
	lhs, value := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		lhs, value = line[:i], strings.TrimSpace(line[i+1:])
	}
	tag, key, tagged := splitTag(lhs)
	if value == "" {
		p.errorf(n, "%s has no value", lhs)
		return
	}
	// Byte by byte, like the lookups: keys are DNS names and addresses,
	// case-insensitive in ASCII only, and strings.ToLower would turn
	// invalid UTF-8 into U+FFFD and make different keys collide.
	key = string(lowerName(nil, key))
	ti := -1
	if tagged {
		ti = tagIndex(tag)
	}
	e := Entry{Tag: tag, Key: key, Value: value, Line: n}
	if tagged && ti < 0 {
		// A tag for another part of sendmail: kept as written, unchecked.
		lower := strings.ToLower(tag)
		u := p.tagSeen[lower]
		if u == nil {
			u = &tagUse{spelling: tag, line: n}
			p.tagSeen[lower] = u
			p.tagOrder = append(p.tagOrder, lower)
		}
		u.count++
		e.Tag = u.spelling
		if p.m.other == nil {
			p.m.other = make(map[string]*table)
		}
		t := p.m.other[lower]
		if t == nil {
			t = newTable()
			p.m.other[lower] = t
		}
		k := parsedKey{kind: keyName, name: key}
		if key == "" {
			k = parsedKey{kind: keyDefault}
		}
		p.add(t, e, k, false, -1)
		return
	}
	if ti >= 0 {
		e.Tag = tagName(ti)
	}
	k, err := parseKey(key)
	if err != nil {
		p.errorf(n, "%s: %v", lhs, err)
		return
	}
	if k.note != "" {
		p.warnf(n, "%s: %s", lhs, k.note)
	}
	skip, num, ok := p.checkValue(n, e, ti, tagged, k)
	if !ok {
		return
	}
	p.checkKeyUse(n, e, ti, tagged, k)
	if !tagged {
		p.warnf(n, "untagged entry %s (deprecated by sendmail) applies to Connect:, From: and To:", lhs)
		if p.m.other == nil {
			p.m.other = make(map[string]*table)
		}
		t := p.m.other[""]
		if t == nil {
			t = newTable()
			p.m.other[""] = t
		}
		p.add(t, e, k, skip, num)
		p.untagged = append(p.untagged, int32(len(p.entries)-1))
		return
	}
	t := p.m.known[ti]
	if t == nil {
		t = newTable()
		p.m.known[ti] = t
	}
	p.add(t, e, k, skip, num)
}

// checkValue validates the value of e for its tag.
func (p *parser) checkValue(n int, e Entry, ti int, tagged bool, k parsedKey) (skip bool, num int32, ok bool) {
	switch {
	case ti == tClientRate || ti == tClientConn || ti == tGreetPause:
		v, err := strconv.ParseUint(e.Value, 10, 31)
		if err != nil {
			p.errorf(n, "%s: value %q is not a non-negative integer", e, e.Value)
			return false, 0, false
		}
		if ti == tGreetPause && v > maxGreetPause {
			p.warnf(n, "%s: %d ms is more than the 5 minutes (300000 ms) a greeting pause is capped at", e, v)
		}
		return false, int32(v), true
	case ti == tSpam:
		a, err := ParseAction(e.Value)
		if err != nil || (a.Kind != Friend && a.Kind != Hater) {
			p.errorf(n, "%s: value %q must be FRIEND or HATER", e, e.Value)
			return false, 0, false
		}
		return false, -1, true
	}
	// Connect:, From:, To: and untagged entries.
	a, err := ParseAction(e.Value)
	if err != nil {
		p.errorf(n, "%s: %v", e, err)
		return false, 0, false
	}
	switch a.Kind {
	case Friend, Hater:
		p.errorf(n, "%s: %s is only a value for Spam:", e, a.Kind)
		return false, 0, false
	case Skip:
		if k.kind == keyName && strings.Contains(k.name, "@") {
			// sendmail would take SKIP here for an error message.
			p.errorf(n, "%s: SKIP applies only to host, domain and address keys", e)
			return false, 0, false
		}
	case Error:
		if deprecatedReply(e.Value) {
			p.warnf(n, "%s: a bare reply is deprecated by sendmail; write ERROR:%s", e, unquote(e.Value))
		}
		if int(a.Status[0]-'0') != a.Code/100 {
			p.warnf(n, "%s: status %s does not match reply code %d", e, a.Status, a.Code)
		}
	}
	return a.Kind == Skip, -1, true
}

// checkKeyUse warns of keys that no lookup of their tag can reach.
func (p *parser) checkKeyUse(n int, e Entry, ti int, tagged bool, k parsedKey) {
	if !tagged {
		return
	}
	envelope := ti == tFrom || ti == tTo || ti == tSpam
	switch {
	case envelope && k.kind == keyDefault:
		p.warnf(n, "%s: sendmail never looks up an empty key for envelope addresses; entry unused", e)
	case envelope && k.kind == keyNet:
		p.warnf(n, "%s: an address key never matches an envelope address; a domain literal is written [%s]", e, e.Key)
	case !envelope && k.kind == keyName && strings.Contains(k.name, "@"):
		p.warnf(n, "%s: a key with @ never matches a client; it is for From:, To: and Spam:", e)
	}
}

// add appends e and indexes it in t under k, replacing (with a warning) an
// earlier entry with the same key.
func (p *parser) add(t *table, e Entry, k parsedKey, skip bool, num int32) {
	i := int32(len(p.entries))
	p.entries = append(p.entries, e)
	p.keys = append(p.keys, k)
	p.dead = append(p.dead, false)
	p.skip = append(p.skip, skip)
	p.num = append(p.num, num)
	if prev, ok := t.get(k); ok {
		p.warnf(e.Line, "duplicate key %s (first on line %d): this line wins", e, p.entries[prev].Line)
		p.dead[prev] = true
	}
	t.set(k, i)
}

// finish merges untagged entries into the tags that fall back on them,
// drops replaced entries and reports unknown tags.
func (p *parser) finish() {
	// sendmail tries the untagged key right after the tagged one, so an
	// untagged entry is as good as a tagged one unless the tag has that key.
	for _, ti := range [...]int{tConnect, tFrom, tTo} {
		for _, i := range p.untagged {
			if p.dead[i] {
				continue
			}
			t := p.m.known[ti]
			if t == nil {
				t = newTable()
				p.m.known[ti] = t
			}
			if _, ok := t.get(p.keys[i]); !ok {
				t.set(p.keys[i], i)
			}
		}
	}
	newIdx := make([]int32, len(p.entries))
	m := p.m
	for i, e := range p.entries {
		if p.dead[i] {
			newIdx[i] = -1
			continue
		}
		newIdx[i] = int32(len(m.entries))
		m.entries = append(m.entries, e)
		m.skip = append(m.skip, p.skip[i])
		m.num = append(m.num, p.num[i])
	}
	remap := func(i int32) int32 { return newIdx[i] }
	for _, t := range m.known {
		if t != nil {
			t.remap(remap)
		}
	}
	for _, t := range m.other {
		t.remap(remap)
	}
	for _, lower := range p.tagOrder {
		u := p.tagSeen[lower]
		p.warnf(u.line, "tag %s: is not used by mxguard; its %d entries are kept", u.spelling, u.count)
	}
}

// splitTag splits "Tag:key" into its tag and key. A left-hand side without
// a word before its first colon is untagged; so is "IPv6:...", which is an
// untagged address.
func splitTag(lhs string) (tag, key string, tagged bool) {
	i := strings.IndexByte(lhs, ':')
	if i <= 0 || !isTagWord(lhs[:i]) || strings.EqualFold(lhs[:i], "IPv6") {
		return "", lhs, false
	}
	return lhs[:i], lhs[i+1:], true
}

func isTagWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && (isDigit(c) || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// keyKind says which index of a table a key goes into.
type keyKind int

const (
	keyName    keyKind = iota // host, domain, user@domain, user@, or any other string
	keyDefault                // the empty key: "Tag:"
	keyNet                    // an address or network
	keyLiteral                // [address or network]: matched against a client without a name
)

type parsedKey struct {
	kind   keyKind
	name   string       // keyName
	prefix netip.Prefix // keyNet, keyLiteral
	note   string       // a warning about the key
}

// parseKey classifies a lower-case key of a known tag (or an untagged one).
func parseKey(k string) (parsedKey, error) {
	switch {
	case k == "":
		return parsedKey{kind: keyDefault}, nil
	case strings.Contains(k, "@"):
		// An envelope key: user@domain or user@. Local parts may hold
		// anything, '/' and ':' included, so nothing below applies.
		return parsedKey{kind: keyName, name: k}, nil
	case len(k) >= 2 && k[0] == '[' && k[len(k)-1] == ']':
		p, isAddr, note, err := parseAddrKey(k[1 : len(k)-1])
		if err != nil {
			return parsedKey{}, err
		}
		if isAddr {
			return parsedKey{kind: keyLiteral, prefix: p, note: note}, nil
		}
		return parsedKey{kind: keyName, name: k}, nil
	}
	p, isAddr, note, err := parseAddrKey(k)
	if err != nil {
		return parsedKey{}, err
	}
	if isAddr {
		return parsedKey{kind: keyNet, prefix: p, note: note}, nil
	}
	if len(k) > 1 && strings.HasSuffix(k, ".") {
		k = k[:len(k)-1] // host names are looked up without the root dot
	}
	return parsedKey{kind: keyName, name: k}, nil
}

// parseAddrKey parses an address key in sendmail's forms (1.2.3.4, 1.2.3,
// IPv6:2001:db8::1, IPv6:2001:db8) or as a CIDR network. isAddr is false for
// a key that is not meant as an address at all, such as a host name.
func parseAddrKey(s string) (p netip.Prefix, isAddr bool, note string, err error) {
	lower := strings.ToLower(s)
	v6tag := strings.HasPrefix(lower, "ipv6:")
	body := s
	if v6tag {
		body = s[len("ipv6:"):]
	}
	switch {
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(body)
		if err != nil {
			return p, false, "", fmt.Errorf("bad CIDR network %q", s)
		}
		if v6tag && p.Addr().Is4() {
			return p, false, "", fmt.Errorf("IPv6: in front of the IPv4 network %q", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if m := p.Masked(); m != p {
			note = fmt.Sprintf("network %s has host bits set; it means %s", s, m)
			p = m
		}
		return p, true, note, nil
	case v6tag:
		p, err := parseIPv6Key(body)
		if err != nil {
			return p, false, "", fmt.Errorf("bad IPv6 key %q: %v", s, err)
		}
		return p, true, "", nil
	case isDottedDigits(s):
		p, err := parseIPv4Key(s)
		if err != nil {
			return p, false, "", fmt.Errorf("bad IPv4 key %q: %v", s, err)
		}
		return p, true, "", nil
	case strings.Contains(s, ":"):
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return p, false, "", nil // some other name
		}
		note = fmt.Sprintf("%s has no IPv6: prefix; sendmail would never match it, mxguard reads it as IPv6:%s", s, s)
		return hostPrefix(a), true, note, nil
	}
	return p, false, "", nil
}

// parseIPv6Key parses what follows "IPv6:": a full address, or one to seven
// leading groups naming a /16 to /112 network, as sendmail forms them by
// cutting groups off a client's address.
func parseIPv6Key(s string) (netip.Prefix, error) {
	if strings.Contains(s, "::") || strings.Count(s, ":") == 7 || strings.Contains(s, ".") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if !a.Is6() || a.Zone() != "" {
			return netip.Prefix{}, errors.New("not an IPv6 address")
		}
		return hostPrefix(a), nil
	}
	var b [16]byte
	groups := strings.Split(s, ":")
	if len(groups) > 7 {
		// Eight groups were handled above; more is no address at all.
		return netip.Prefix{}, fmt.Errorf("%d groups: more than an IPv6 address has", len(groups))
	}
	for i, g := range groups {
		if len(g) == 0 || len(g) > 4 {
			return netip.Prefix{}, fmt.Errorf("group %q is not 1 to 4 hex digits", g)
		}
		v, err := strconv.ParseUint(g, 16, 16)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("group %q is not 1 to 4 hex digits", g)
		}
		b[2*i], b[2*i+1] = byte(v>>8), byte(v)
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 16*len(groups)), nil
}

// parseIPv4Key parses one to four dotted decimal bytes, a /8 to /32.
func parseIPv4Key(s string) (netip.Prefix, error) {
	var b [4]byte
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Prefix{}, errors.New("more than four numbers")
	}
	for i, part := range parts {
		if part == "" || len(part) > 3 || (len(part) > 1 && part[0] == '0') {
			return netip.Prefix{}, fmt.Errorf("%q is not a number from 0 to 255 without leading zeros", part)
		}
		v, err := strconv.ParseUint(part, 10, 8)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a number from 0 to 255", part)
		}
		b[i] = byte(v)
	}
	return netip.PrefixFrom(netip.AddrFrom4(b), 8*len(parts)), nil
}

// hostPrefix returns the single-address network of a; an IPv4-mapped
// address becomes IPv4, as sendmail shows such a client.
func hostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

func isDottedDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) && s[i] != '.' {
			return false
		}
	}
	return s != ""
}

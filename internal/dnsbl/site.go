package dnsbl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

const (
	// maxLabel and maxDomain are RFC 1035's limits on a name as text. A
	// list's domain must leave room for the longest name put before it,
	// an IPv6 address as 32 nibbles and their dots.
	maxLabel     = 63
	maxName      = 253
	ipv6Prefix   = 64
	maxDomainLen = maxName - ipv6Prefix
)

// A Site is one entry of postscreen_dnsbl_sites: a DNS list, which of its
// answers count, and what each counts for.
type Site struct {
	// Domain is the list's zone, in lower case, without a trailing dot.
	Domain string
	// Filter selects the answers that count. The zero Filter is none:
	// then any answer in 127.0.0.0/8 counts, except 127.255.255.0/24,
	// which lists use to refuse a query (Spamhaus: 127.255.255.254 for a
	// query through a public resolver) and which would otherwise list
	// every client.
	Filter Filter
	// Weight is added to the score when the list lists the client;
	// negative for an allow list. An entry counts once however many of
	// the list's answers match it.
	Weight int
}

// String returns the entry in the syntax ParseSites reads, with the filter
// in a canonical form and the weight left out when it is 1.
func (s Site) String() string {
	var b strings.Builder
	b.WriteString(s.Domain)
	if !s.Filter.IsZero() {
		b.WriteByte('=')
		b.WriteString(s.Filter.String())
	}
	if s.Weight != 1 {
		b.WriteByte('*')
		b.WriteString(strconv.Itoa(s.Weight))
	}
	return b.String()
}

// SiteError is the error about one entry given to ParseSites.
type SiteError struct {
	Index int    // the entry's position in the list, from 0
	Entry string // the entry as given
	Err   error  // what is wrong with it
}

func (e *SiteError) Error() string { return fmt.Sprintf("dnsbl: site %q: %v", e.Entry, e.Err) }
func (e *SiteError) Unwrap() error { return e.Err }

// ParseSites reads entries in the syntax of Postfix's
// postscreen_dnsbl_sites, each domain[=filter][*weight]:
//
//	zen.spamhaus.org*2
//	b.barracudacentral.org=127.0.0.2*7
//	list.dnswl.org=127.0.[0..255].[1..3]*-5
//	bl.example=127.0.0.[2;3;4]
//
// The filter is an IPv4 address whose fields may each be a "[...]" list of
// ";"-separated numbers and a..b ranges (Postfix's ip_match syntax, whose
// error messages it also uses); the weight is an integer, 1 when left out.
// A domain may be given more than once with different filters, and each
// entry that matches counts, as in postscreen; the same domain and filter
// twice is an error. The error for bad entries joins one *SiteError per
// entry.
func ParseSites(entries []string) ([]Site, error) {
	var errs []error
	sites := make([]Site, 0, len(entries))
	seen := make(map[siteKey]string, len(entries))
	for i, entry := range entries {
		s, err := parseSite(entry)
		if err == nil {
			k := siteKey{s.Domain, s.Filter}
			if first, dup := seen[k]; dup {
				err = fmt.Errorf("same list and filter as %q", first)
			} else {
				seen[k] = entry
			}
		}
		if err != nil {
			errs = append(errs, &SiteError{Index: i, Entry: entry, Err: err})
			continue
		}
		sites = append(sites, s)
	}
	if errs != nil {
		return nil, errors.Join(errs...)
	}
	return sites, nil
}

type siteKey struct {
	domain string
	filter Filter
}

// parseSite reads one entry. As in postscreen, the weight is split off at
// the first "*" and then the filter at the first "=".
func parseSite(entry string) (Site, error) {
	s := Site{Weight: 1}
	rest, weight, hasWeight := strings.Cut(entry, "*")
	if hasWeight {
		w, err := strconv.ParseInt(weight, 10, 32)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return Site{}, fmt.Errorf("weight %q out of range", weight)
			}
			return Site{}, fmt.Errorf("bad weight %q: want an integer", weight)
		}
		s.Weight = int(w)
	}
	domain, filter, hasFilter := strings.Cut(rest, "=")
	if hasFilter {
		f, err := parseFilter(filter)
		if err != nil {
			return Site{}, fmt.Errorf("bad filter %q: %w", filter, err)
		}
		s.Filter = f
	}
	if err := checkDomain(domain); err != nil {
		return Site{}, fmt.Errorf("bad domain %q: %w", domain, err)
	}
	s.Domain = strings.ToLower(domain)
	return s, nil
}

// checkDomain applies Postfix's valid_hostname rules (letters, digits, "-"
// and "_"; labels of 1 to 63 characters; not all digits), and the length
// that leaves room for an IPv6 address before the domain.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty")
	}
	label, numeric := 0, true
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case isDigit(c):
			label++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_':
			label++
			numeric = false
		case c == '-':
			if label == 0 || i+1 == len(d) || d[i+1] == '.' {
				return errors.New(`a label starts or ends with "-"`)
			}
			label++
			numeric = false
		case c == '.':
			if i+1 == len(d) {
				return errors.New(`trailing "."; write the domain without it`)
			}
			if label == 0 {
				return errors.New(`empty label (a leading "." or "..")`)
			}
			label = 0
		default:
			r, _ := utf8.DecodeRuneInString(d[i:])
			return fmt.Errorf("invalid character %q", r)
		}
		if label > maxLabel {
			return fmt.Errorf("label longer than %d characters", maxLabel)
		}
	}
	if numeric {
		return errors.New("all numeric")
	}
	if len(d) > maxDomainLen {
		return fmt.Errorf("longer than %d characters, which leaves no room for the %d of a reversed IPv6 address",
			maxDomainLen, ipv6Prefix)
	}
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// A Filter is a pattern of IPv4 addresses, one set of values per octet.
// The zero Filter is the absence of one.
type Filter struct {
	octets [4]octetSet
}

// octetSet has bit v set when octet value v matches.
type octetSet [4]uint64

func (o *octetSet) addRange(lo, hi int) {
	for v := lo; v <= hi; v++ {
		o[v>>6] |= 1 << (v & 63)
	}
}

func (o *octetSet) has(v byte) bool { return o[v>>6]&(1<<(v&63)) != 0 }

// FilterFunc returns the Filter that matches octet i (0 to 3) of an
// answer with value v when match(i, v) holds: for a program that builds
// filters (import-sendmail) and writes them with String.
func FilterFunc(match func(i, v int) bool) Filter {
	var f Filter
	for i := range f.octets {
		for v := range 256 {
			if match(i, v) {
				f.octets[i].addRange(v, v)
			}
		}
	}
	return f
}

// IsZero reports whether f is no filter at all.
func (f Filter) IsZero() bool { return f == Filter{} }

// Match reports whether a, an IPv4 address, matches f.
func (f *Filter) Match(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	return f.octets[0].has(b[0]) && f.octets[1].has(b[1]) && f.octets[2].has(b[2]) && f.octets[3].has(b[3])
}

// String returns f in the syntax parseFilter reads: a single value as a
// number, other sets as "[...]" of values and a..b runs.
func (f Filter) String() string {
	var b strings.Builder
	for i := range f.octets {
		if i > 0 {
			b.WriteByte('.')
		}
		f.octets[i].format(&b)
	}
	return b.String()
}

func (o *octetSet) format(b *strings.Builder) {
	var runs [][2]int
	for v := 0; v < 256; v++ {
		if !o.has(byte(v)) {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1][1] == v-1 {
			runs[n-1][1] = v
		} else {
			runs = append(runs, [2]int{v, v})
		}
	}
	if len(runs) == 1 && runs[0][0] == runs[0][1] {
		b.WriteString(strconv.Itoa(runs[0][0]))
		return
	}
	b.WriteByte('[')
	for i, r := range runs {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(strconv.Itoa(r[0]))
		if r[1] != r[0] {
			b.WriteString("..")
			b.WriteString(strconv.Itoa(r[1]))
		}
	}
	b.WriteByte(']')
}

// Tokens of the filter syntax besides single characters.
const (
	tokEOF = -1 - iota
	tokNumber
	tokBadNumber // digits worth more than 255
)

// lexer splits a filter into numbers and single characters, as Postfix's
// ip_match_next_token, and remembers where the last token began so that an
// error can point at it.
type lexer struct {
	s          string
	start, pos int
}

func (l *lexer) next() (tok, value int) {
	l.start = l.pos
	if l.pos == len(l.s) {
		return tokEOF, 0
	}
	c := l.s[l.pos]
	if !isDigit(c) {
		l.pos++
		return int(c), 0
	}
	tok = tokNumber
	for l.pos < len(l.s) && isDigit(l.s[l.pos]) {
		value = value*10 + int(l.s[l.pos]-'0')
		if value > 255 {
			tok, value = tokBadNumber, 256 // and no overflow on long runs
		}
		l.pos++
	}
	return tok, value
}

// errorf reports an error at the last token, marked >like this< in the
// pattern as Postfix does.
func (l *lexer) errorf(format string, args ...any) error {
	where := l.s[:l.start] + ">" + l.s[l.start:l.pos] + "<" + l.s[l.pos:]
	return fmt.Errorf(format+" at %q", append(args, where)...)
}

// parseFilter reads an IPv4 address pattern in Postfix's ip_match syntax:
// four "."-separated fields, each a number 0..255 or a "[...]" list of
// ";"-separated numbers and a..b ranges. Brackets around the whole pattern
// are dropped, as Postfix drops them.
func parseFilter(pattern string) (Filter, error) {
	if strings.HasPrefix(pattern, "[") {
		end := closingBracket(pattern)
		if end < 0 {
			return Filter{}, errors.New(`missing "]" character`)
		}
		if end == len(pattern)-1 {
			pattern = pattern[1:end]
		}
	}
	if pattern == "" {
		return Filter{}, errors.New("empty address pattern")
	}
	var f Filter
	l := &lexer{s: pattern}
	for i := range f.octets {
		if i > 0 {
			if tok, _ := l.next(); tok != '.' {
				return Filter{}, l.errorf(`need "."`)
			}
		}
		switch tok, v := l.next(); tok {
		case tokNumber:
			f.octets[i].addRange(v, v)
		case '[':
			if err := l.sequence(&f.octets[i]); err != nil {
				return Filter{}, err
			}
		default:
			return Filter{}, l.errorf(`need decimal number 0..255 or "["`)
		}
	}
	if tok, _ := l.next(); tok != tokEOF {
		return Filter{}, l.errorf("garbage after pattern")
	}
	return f, nil
}

// sequence reads the inside of a "[...]" field after its "[".
func (l *lexer) sequence(o *octetSet) error {
	for {
		tok, lo := l.next()
		if tok != tokNumber {
			return l.errorf("need decimal number 0..255")
		}
		hi := lo
		tok, _ = l.next()
		if tok == '.' {
			var t2, t3 int
			if t2, _ = l.next(); t2 == '.' {
				t3, hi = l.next()
			}
			if t2 != '.' || t3 != tokNumber || hi < lo {
				return l.errorf("numeric range error")
			}
			tok, _ = l.next()
		}
		o.addRange(lo, hi)
		switch tok {
		case ';':
		case ']':
			return nil
		default:
			return l.errorf(`need ";" or "]"`)
		}
	}
}

// closingBracket returns the index of the "]" that closes the "[" at the
// start of s, counting nesting, or -1.
func closingBracket(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			if depth--; depth == 0 {
				return i
			}
		}
	}
	return -1
}

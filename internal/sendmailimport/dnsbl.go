package sendmailimport

import (
	"errors"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/mxguard/mxguard/internal/dnsbl"
)

// The DNS blocklist FEATUREs, as sendmail 8.17's cf/README and
// feature/dnsbl.m4 (8.34) and feature/enhdnsbl.m4 (1.13) define them:
//
//	FEATURE(`dnsbl', `zone' [, `message' [, `t']])
//	FEATURE(`enhdnsbl', `zone' [, `message' [, `t' [, `result' ...]]])
//
// Both look the client's IPv4 address up in zone from check_relay, so at
// connect, or at each RCPT under FEATURE(`delay_checks'). dnsbl rejects on
// any answer; enhdnsbl on an answer that matches one of up to six result
// patterns (any answer when the first is empty). The message may instead
// be `discard' or `quarantine'; a third argument (`t' or a message) turns
// a failed lookup into 451.

// maxResults is how many result patterns enhdnsbl reads (_ARG4_ to _ARG9_).
const maxResults = 6

// An answer, as sendmail's enhdnsbl map returns it (-a.), is four numbers
// and a trailing dot: 127.0.0.2. is 8 tokens, a number at each even index.
const answerTokens = 8

// maxBoxes bounds the address boxes one list may collect before they are
// merged (quadratic); real patterns give one box each.
const maxBoxes = 64

// A box is the answers one result pattern matches along one way of
// matching: each octet a value, or -1 for any.
type box [4]int16

var anyBox = box{-1, -1, -1, -1}

// A dnsblList is one zone named by one or more FEATUREs.
type dnsblList struct {
	domain string // lower case
	any    bool   // some FEATURE rejects on any answer
	boxes  []box  // else the answers that reject
}

// dnsblFeature reads one FEATURE(`dnsbl') or FEATURE(`enhdnsbl'). What it
// cannot carry over is listed; a FEATURE whose zone is unusable, or that
// would reject nothing sendmail rejects, or that discards instead of
// rejecting, is left out whole.
func (t *translator) dnsblFeature(st statement, name string, args []string) {
	enhanced := name == "enhdnsbl"
	zone := ""
	if len(args) > 0 {
		zone = strings.TrimSpace(args[0])
	}
	if zone == "" {
		if enhanced {
			t.skip(st, "not translated (no zone; sendmail reports FEATURE(`enhdnsbl') without one as an error)")
		} else {
			// Old sendmails asked the MAPS RBL (rbl.maps.vix.com, later
			// blackholes.mail-abuse.org), long since closed; current ones
			// report an error.
			t.skip(st, "not translated (no zone; sendmail 8.17 reports FEATURE(`dnsbl') without one as an error, and the default of older versions, the MAPS RBL, is closed)")
		}
		return
	}
	if err := checkZone(zone); err != nil {
		t.skip(st, "not translated: "+err.Error())
		return
	}
	var message, tempfail string
	if len(args) > 1 {
		message = args[1]
	}
	if len(args) > 2 {
		tempfail = args[2]
	}
	// m4 compares these verbatim.
	if message == "discard" || message == "quarantine" {
		t.skip(st, "not translated (`"+message+"': mxguard refuses a listed client or only lowers its score; it neither discards nor quarantines its mail)")
		return
	}

	anyAnswer := true
	var boxes []box
	var notes []string // about results, listed only if the FEATURE is kept
	if enhanced {
		results := args[min(3, len(args)):]
		if len(results) > maxResults {
			for _, r := range results[maxResults:] {
				notes = append(notes, "argument `"+r+"' ignored (sendmail reads at most six results)")
			}
			results = results[:maxResults]
		}
		// An empty first result is sendmail's $+: any answer, which the
		// other results cannot narrow.
		if len(results) > 0 && results[0] != "" {
			anyAnswer = false
			for _, r := range results {
				if r == "" {
					continue
				}
				bs, err := resultBoxes(r)
				switch {
				case err != nil:
					notes = append(notes, "result `"+r+"' not translated: "+err.Error())
				case len(bs) == 0:
					notes = append(notes, "result `"+r+"' not translated: it never matches in sendmail, which compares the whole answer and its trailing dot (`127.0.0.2.'; `127.0.0.$-.' for 127.0.0.0/24)")
				default:
					boxes = append(boxes, bs...)
				}
			}
		}
	} else if len(args) > 3 {
		for _, r := range args[3:] {
			notes = append(notes, "argument `"+r+"' ignored (FEATURE(`dnsbl') takes no results, in sendmail too: any answer rejects)")
		}
	}
	domain := strings.ToLower(zone)
	if !anyAnswer {
		if len(boxes) == 0 {
			for _, n := range notes {
				t.skip(st, n)
			}
			t.skip(st, "not translated (no result left to reject on)")
			return
		}
		have := 0
		if l := t.findList(domain); l != nil {
			have = len(l.boxes)
		}
		if have+len(boxes) > maxBoxes {
			t.skip(st, "not translated (more than "+strconv.Itoa(maxBoxes)+" answer patterns for one zone)")
			return
		}
	}
	if message != "" {
		notes = append(notes, "message `"+message+"' not translated (mxguard's reply names no list, on purpose)")
	}
	if tempfail != "" {
		notes = append(notes, "argument `"+tempfail+"' not translated (mxguard counts a list that fails to answer as not listing; sendmail failed it temporarily)")
	}
	for _, n := range notes {
		t.skip(st, n)
	}
	l := t.findList(domain)
	if l == nil {
		l = &dnsblList{domain: domain}
		t.dnsblLists = append(t.dnsblLists, l)
	}
	if anyAnswer {
		l.any = true
	} else {
		l.boxes = append(l.boxes, boxes...)
	}
	t.dnsblFrom = append(t.dnsblFrom, st)
}

// findList returns the list of domain, nil before a FEATURE names it.
func (t *translator) findList(domain string) *dnsblList {
	for _, l := range t.dnsblLists {
		if l.domain == domain {
			return l
		}
	}
	return nil
}

// checkZone refuses what is not a plain DNS name before the site parser
// sees it, since it would read "=" and "*" as a filter and a weight.
func checkZone(zone string) error {
	for _, c := range zone {
		if !(c == '.' || c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return errors.New("not a DNS name (" + strconv.QuoteRuneToASCII(c) + ")")
		}
	}
	if _, err := dnsbl.ParseSites([]string{zone}); err != nil {
		var se *dnsbl.SiteError
		if errors.As(err, &se) {
			return se.Err
		}
		return err
	}
	return nil
}

// finishDNSBL writes [dnsbl] once every FEATURE is read, since
// delay_checks may come before or after the lists.
func (t *translator) finishDNSBL() {
	if len(t.dnsblFrom) == 0 {
		return
	}
	var sites []string
	for _, l := range t.dnsblLists {
		filters := mergeBoxes(l.boxes)
		if l.any || slices.ContainsFunc(filters, filter.full) {
			// Left unfiltered, mxguard counts any answer in 127.0.0.0/8
			// but the 127.255.255.0/24 by which lists refuse a query.
			sites = append(sites, l.domain)
			continue
		}
		for _, f := range filters {
			sites = append(sites, l.domain+"="+f.String())
		}
	}
	if !t.setFrom(t.dnsblFrom, "dnsbl.sites", domainList(sites)) {
		return
	}
	t.setFrom(t.dnsblFrom, "dnsbl.threshold", "1", "Any one list rejects a client it lists, as in sendmail.")
	if t.delayChecks == nil {
		t.setFrom(t.dnsblFrom, "dnsbl.action", quote("reject"))
		return
	}
	from := append(slices.Clone(t.dnsblFrom), *t.delayChecks)
	slices.SortStableFunc(from, func(a, b statement) int { return a.line - b.line })
	t.setFrom(from, "dnsbl.action", quote("reject_rcpt"),
		"FEATURE(`delay_checks') moves sendmail's list checks to RCPT: a listed client gets 550 at each RCPT.")
	for _, a := range t.delayChecks.args[1:] {
		if strings.TrimSpace(a) == "friend" {
			t.skip(*t.delayChecks, "`friend' does not exempt Spam: FRIEND recipients from the DNS lists (a listed client gets 550 at every RCPT)")
		}
	}
}

// Tokens of a result pattern: a number, a dot, or one of the LHS
// metasymbols $- (one token), $+ (one or more) and $* (zero or more).
const (
	tokNum = iota
	tokDot
	tokOne
	tokPlus
	tokStar
)

type token struct {
	kind int
	num  int // for tokNum: the octet, or -1 for digits no answer has
}

// resultBoxes returns the answers the enhdnsbl result pattern r matches,
// as boxes, none when it can never match. sendmail matches a rule's left
// side against the whole workspace, so "127.0.0." is no prefix: it matches
// nothing, as does "127.0.0.2" without its dot.
func resultBoxes(r string) ([]box, error) {
	var toks []token
	dead := false
	var macro error
	for i := 0; i < len(r); i++ {
		switch c := r[i]; {
		case c == ' ' || c == '\t' || c == '\n':
			// Separates tokens, as in sendmail.
		case '0' <= c && c <= '9':
			j := i
			for j < len(r) && '0' <= r[j] && r[j] <= '9' {
				j++
			}
			t := token{kind: tokNum, num: -1}
			// sendmail compares text: "02" or "256" is no answer's octet.
			if n, err := strconv.Atoi(r[i:j]); err == nil && n <= 255 && strconv.Itoa(n) == r[i:j] {
				t.num = n
			}
			toks = append(toks, t)
			i = j - 1
		case c == '.':
			toks = append(toks, token{kind: tokDot})
		case c == '$' && i+1 < len(r) && r[i+1] == '-':
			toks = append(toks, token{kind: tokOne})
			i++
		case c == '$' && i+1 < len(r) && r[i+1] == '+':
			toks = append(toks, token{kind: tokPlus})
			i++
		case c == '$' && i+1 < len(r) && r[i+1] == '*':
			if len(toks) == 0 || toks[len(toks)-1].kind != tokStar {
				toks = append(toks, token{kind: tokStar})
			}
			i++
		case c == '$' && i+1 < len(r) && r[i+1] == '@':
			// Matches no token at all.
			i++
		case c == '$':
			// A class ($=R, $~R, $={name}) or a macro ($&x): its name is
			// no token of the pattern.
			j := min(i+2, len(r))
			if j < len(r) && r[j] == '{' {
				if k := strings.IndexByte(r[j:], '}'); k >= 0 {
					j += k + 1
				}
			} else if j < len(r) && i+1 < len(r) && (r[i+1] == '=' || r[i+1] == '~' || r[i+1] == '&') {
				j++
			}
			if macro == nil {
				macro = errors.New("sendmail classes and macros (" + r[i:j] + ") are not evaluated")
			}
			i = j - 1
		default:
			// No answer has this token, so no answer matches.
			dead = true
		}
	}
	if dead {
		return nil, nil
	}
	if macro != nil {
		return nil, macro
	}
	// need[i] is the fewest answer tokens toks[i:] consume.
	need := make([]int, len(toks)+1)
	for i := len(toks) - 1; i >= 0; i-- {
		need[i] = need[i+1]
		if toks[i].kind != tokStar {
			need[i]++
		}
	}
	if need[0] > answerTokens {
		return nil, nil
	}
	var out []box
	var match func(ti, ai int, b box)
	match = func(ti, ai int, b box) {
		if need[ti] > answerTokens-ai {
			return
		}
		if ti == len(toks) {
			if ai == answerTokens && !slices.Contains(out, b) {
				out = append(out, b)
			}
			return
		}
		switch t := toks[ti]; t.kind {
		case tokNum:
			if ai%2 == 0 && t.num >= 0 {
				b[ai/2] = int16(t.num)
				match(ti+1, ai+1, b)
			}
		case tokDot:
			if ai%2 == 1 {
				match(ti+1, ai+1, b)
			}
		case tokOne:
			match(ti+1, ai+1, b)
		case tokPlus, tokStar:
			k := 1
			if t.kind == tokStar {
				k = 0
			}
			for ; ai+k <= answerTokens; k++ {
				match(ti+1, ai+k, b)
			}
		}
	}
	match(0, 0, anyBox)
	return out, nil
}

// A filter is a set of answers in Postfix's ip_match form: a set of
// values per octet.
type filter [4]octetSet

type octetSet [4]uint64

func (o *octetSet) add(v int)     { o[v>>6] |= 1 << (v & 63) }
func (o octetSet) has(v int) bool { return o[v>>6]&(1<<(v&63)) != 0 }
func (o octetSet) within(p octetSet) bool {
	for i := range o {
		if o[i]&^p[i] != 0 {
			return false
		}
	}
	return true
}

func (o octetSet) union(p octetSet) octetSet {
	for i := range o {
		o[i] |= p[i]
	}
	return o
}

func (o octetSet) size() int {
	n := 0
	for _, w := range o {
		n += bits.OnesCount64(w)
	}
	return n
}

func boxFilter(b box) filter {
	var f filter
	for i, v := range b {
		if v < 0 {
			for x := range 256 {
				f[i].add(x)
			}
		} else {
			f[i].add(int(v))
		}
	}
	return f
}

func (f filter) full() bool {
	for _, o := range f {
		if o.size() != 256 {
			return false
		}
	}
	return true
}

func (f filter) within(g filter) bool {
	for i := range f {
		if !f[i].within(g[i]) {
			return false
		}
	}
	return true
}

// mergeBoxes turns boxes into as few filters as it simply can, matching
// the same answers: a filter inside another goes, and two that differ in
// one octet become one (127.0.0.2 and 127.0.0.4 are 127.0.0.[2;4]). What
// is left cannot be one filter and becomes one site entry each.
func mergeBoxes(boxes []box) []filter {
	fs := make([]filter, len(boxes))
	for i, b := range boxes {
		fs[i] = boxFilter(b)
	}
	for changed := true; changed; {
		changed = false
	scan:
		for i := range fs {
			for j := range fs {
				if i == j {
					continue
				}
				if fs[j].within(fs[i]) {
					fs = slices.Delete(fs, j, j+1)
					changed = true
					break scan
				}
				if k := oneApart(fs[i], fs[j]); k >= 0 {
					fs[i][k] = fs[i][k].union(fs[j][k])
					fs = slices.Delete(fs, j, j+1)
					changed = true
					break scan
				}
			}
		}
	}
	return fs
}

// oneApart returns the octet in which f and g differ when they agree on
// the other three, else -1.
func oneApart(f, g filter) int {
	k := -1
	for i := range f {
		if f[i] != g[i] {
			if k >= 0 {
				return -1
			}
			k = i
		}
	}
	return k
}

// String writes f as ParseSites reads it: "127.0.0.[2;4]",
// "127.0.[0..255].[1..3]" (dnsbl's Filter writes it).
func (f filter) String() string {
	return dnsbl.FilterFunc(func(i, v int) bool { return f[i].has(v) }).String()
}

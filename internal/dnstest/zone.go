// Package dnstest runs a real DNS server on the loopback interface for tests.
//
// A [Zone] holds resource records in memory and answers queries for them the
// way a recursive resolver would answer a stub: CNAME chains inside the zone
// are followed, unknown names get NXDOMAIN, negative answers carry the SOA
// of the enclosing zone when the zone has one, and UDP answers that do not fit
// the client's buffer are truncated so that the client must retry over TCP.
// Tests can slow down or break single names ([Zone.SetDelay],
// [Zone.SetServfail]) and count queries to prove that a client caches.
//
// [Start] serves a Zone on 127.0.0.1 over UDP and TCP for the length of a
// test; the mxguard-testdns command serves one from a zone file for shell
// and end-to-end tests.
package dnstest

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxChain bounds CNAME chasing so that a loop in the zone ends.
const maxChain = 8

// A Zone is an in-memory set of resource records that answers DNS queries.
// It implements [dns.Handler]. Its methods are safe for concurrent use.
type Zone struct {
	mu       sync.Mutex
	rrs      map[string][]dns.RR // by canonical owner name
	delay    map[string]time.Duration
	servfail map[string]bool
	queries  int
	perName  map[question]int
	closed   bool
	// changed is closed and replaced whenever a query arrives or a delay
	// changes, so that waiters can re-examine the state without polling.
	changed chan struct{}
}

type question struct {
	name  string
	qtype uint16
}

// NewZone returns an empty zone.
func NewZone() *Zone {
	return &Zone{
		rrs:      make(map[string][]dns.RR),
		delay:    make(map[string]time.Duration),
		servfail: make(map[string]bool),
		perName:  make(map[question]int),
		changed:  make(chan struct{}),
	}
}

// notify wakes every waiter. z.mu must be held.
func (z *Zone) notify() {
	close(z.changed)
	z.changed = make(chan struct{})
}

// Add parses each string as one resource record in zone-file syntax, for
// example "5.0.0.127.in-addr.arpa. 60 IN PTR host5.example.", and adds it.
// Names must be fully qualified. Nothing is added if any record is invalid.
func (z *Zone) Add(rrs ...string) error {
	parsed, err := parseRRs(rrs)
	if err != nil {
		return err
	}
	z.AddRR(parsed...)
	return nil
}

// AddRR adds records. An added record that duplicates one already present
// (same name, type, class and data) replaces it, so its TTL can be changed.
func (z *Zone) AddRR(rrs ...dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, rr := range rrs {
		name := dns.CanonicalName(rr.Header().Name)
		z.rrs[name] = append(removeDuplicates(z.rrs[name], rr), rr)
	}
}

// Remove deletes the records that match the given ones in everything but
// the TTL. It fails if a string is not a valid record; removing a record
// that is not present is not an error.
func (z *Zone) Remove(rrs ...string) error {
	parsed, err := parseRRs(rrs)
	if err != nil {
		return err
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, rr := range parsed {
		name := dns.CanonicalName(rr.Header().Name)
		if left := removeDuplicates(z.rrs[name], rr); len(left) > 0 {
			z.rrs[name] = left
		} else {
			delete(z.rrs, name)
		}
	}
	return nil
}

// Load reads a zone file (RFC 1035 master file syntax, with $ORIGIN and
// $TTL; $INCLUDE is refused) and adds its records. The file name is used in
// error messages only.
func (z *Zone) Load(r io.Reader, file string) error {
	zp := dns.NewZoneParser(r, ".", file)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return err
	}
	z.AddRR(rrs...)
	return nil
}

// SetDelay makes answers for name wait d after the query arrives; 0 removes
// the delay. A change applies to queries already waiting, so a test can
// release a held answer by setting the delay to 0.
func (z *Zone) SetDelay(name string, d time.Duration) {
	z.mu.Lock()
	defer z.mu.Unlock()
	name = dns.CanonicalName(name)
	if d > 0 {
		z.delay[name] = d
	} else {
		delete(z.delay, name)
	}
	z.notify()
}

// SetServfail makes queries for name fail with SERVFAIL while fail is true.
func (z *Zone) SetServfail(name string, fail bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	name = dns.CanonicalName(name)
	if fail {
		z.servfail[name] = true
	} else {
		delete(z.servfail, name)
	}
}

// Queries reports how many queries the zone has received.
func (z *Zone) Queries() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.queries
}

// QueryCount reports how many queries for name and qtype (dns.TypeA, ...)
// the zone has received.
func (z *Zone) QueryCount(name string, qtype uint16) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.perName[question{dns.CanonicalName(name), qtype}]
}

// WaitQueries blocks until the zone has received at least n queries or
// until timeout has passed, and reports whether it got them.
func (z *Zone) WaitQueries(n int, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		z.mu.Lock()
		got, changed := z.queries, z.changed
		z.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}

// Close releases answers held by SetDelay and makes later answers
// immediate, so that a server shutting down does not wait for them.
func (z *Zone) Close() {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.closed = true
	z.notify()
}

// ServeDNS answers one query.
func (z *Zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m) // an error means the client is gone
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)

	z.mu.Lock()
	z.queries++
	z.perName[question{name, q.Qtype}]++
	z.notify()
	z.mu.Unlock()

	z.wait(name, start)

	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	z.answer(m, name, q.Qtype)

	size := dns.MaxMsgSize
	if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size = dns.MinMsgSize
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
		if size == dns.MinMsgSize {
			size = int(opt.UDPSize())
		}
	}
	m.Truncate(size)
	w.WriteMsg(m) // an error means the client is gone
}

// wait holds the answer for name until its delay, counted from start, has
// passed. The delay is re-read whenever it changes.
func (z *Zone) wait(name string, start time.Time) {
	for {
		z.mu.Lock()
		d, closed, changed := z.delay[name], z.closed, z.changed
		z.mu.Unlock()
		left := time.Until(start.Add(d))
		if closed || left <= 0 {
			return
		}
		timer := time.NewTimer(left)
		select {
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// answer fills m with the records for name and qtype, following CNAMEs.
func (z *Zone) answer(m *dns.Msg, name string, qtype uint16) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for range maxChain {
		if z.servfail[name] {
			m.Rcode = dns.RcodeServerFailure
			m.Answer = nil
			return
		}
		rrs, ok := z.rrs[name]
		if !ok {
			if !z.hasChildren(name) {
				m.Rcode = dns.RcodeNameError
			}
			z.addSOA(m, name)
			return
		}
		var cname *dns.CNAME
		found := false
		for _, rr := range rrs {
			if rr.Header().Rrtype == qtype || qtype == dns.TypeANY {
				m.Answer = append(m.Answer, rr)
				found = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found {
			return
		}
		if cname == nil {
			z.addSOA(m, name) // NODATA
			return
		}
		m.Answer = append(m.Answer, cname)
		name = dns.CanonicalName(cname.Target)
	}
}

// addSOA puts the SOA record of the zone that holds name, if the zone has
// one at name or above it, in the authority section of a negative answer:
// RFC 2308 makes it the answer's negative-caching TTL. z.mu must be held.
func (z *Zone) addSOA(m *dns.Msg, name string) {
	for {
		for _, rr := range z.rrs[name] {
			if rr.Header().Rrtype == dns.TypeSOA {
				m.Ns = append(m.Ns, rr)
				return
			}
		}
		if name == "." {
			return
		}
		_, rest, _ := strings.Cut(name, ".")
		if rest == "" {
			rest = "."
		}
		name = rest
	}
}

// hasChildren reports whether name is an empty non-terminal: it owns no
// records but names below it do, so it exists (NODATA, not NXDOMAIN).
func (z *Zone) hasChildren(name string) bool {
	suffix := "." + name
	if name == "." {
		suffix = "."
	}
	for owner := range z.rrs {
		if len(owner) > len(suffix) && owner[len(owner)-len(suffix):] == suffix {
			return true
		}
	}
	return false
}

func parseRRs(texts []string) ([]dns.RR, error) {
	rrs := make([]dns.RR, 0, len(texts))
	for _, s := range texts {
		rr, err := dns.NewRR(s)
		if err != nil {
			return nil, fmt.Errorf("dnstest: record %q: %w", s, err)
		}
		if rr == nil {
			return nil, fmt.Errorf("dnstest: record %q: no record", s)
		}
		rrs = append(rrs, rr)
	}
	return rrs, nil
}

// removeDuplicates returns rrs without the records that equal rr in all but
// the TTL. It reuses the backing array of rrs.
func removeDuplicates(rrs []dns.RR, rr dns.RR) []dns.RR {
	kept := rrs[:0]
	for _, old := range rrs {
		if !dns.IsDuplicate(old, rr) {
			kept = append(kept, old)
		}
	}
	return kept
}

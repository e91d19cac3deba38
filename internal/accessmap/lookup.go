package accessmap

import (
	"bytes"
	"net/netip"
	"strings"
)

// Buffer sizes for lower-casing the lookup input on the stack: a host name
// has at most 253 octets and an SMTP path 256. Longer input still works,
// through a heap copy.
const (
	hostBuf = 256
	addrBuf = 512
)

// table returns the table of tag ("Connect" or "Connect:", any case), or nil.
func (m *Map) table(tag string) *table {
	tag = strings.TrimSuffix(tag, ":")
	if i := tagIndex(tag); i >= 0 {
		return m.known[i]
	}
	if tag == "" {
		return nil
	}
	for name, t := range m.other {
		if strings.EqualFold(name, tag) {
			return t
		}
	}
	return nil
}

// LookupClient finds the entry of tag (Connect, ClientRate, ClientConn,
// GreetPause) for a client, searching in sendmail's order and stopping at the
// first match:
//
//  1. host, the forward-confirmed name of the client (lower-case, without a
//     trailing dot; "" if it has none), then each parent domain:
//     a.b.example.com, b.example.com, example.com, com. Keys written
//     ".example.com" (sendmail's lookupdotdomain) match below example.com
//     and are tried right after the name one label longer. A client without
//     a name is looked up as sendmail's [1.2.3.4] instead, so keys in
//     brackets match only such clients.
//  2. addr: the longest address key that contains it. Sendmail's keys are
//     1.2.3.4, 1.2.3, 1.2 and 1, and IPv6:2001:db8:1:2:3:4:5:6 down to
//     IPv6:2001 for IPv6; mxguard adds CIDR keys. An IPv4-mapped IPv6
//     address is looked up as IPv4, as sendmail shows it.
//  3. the empty key, "Tag:".
//
// SKIP ends the stage it is found in as if nothing matched there, so that
// Connect:10.1 RELAY with Connect:10.1.2 SKIP leaves 10.1.2.0/24 to the
// default. The result is never a SKIP entry.
//
// Sendmail itself consults host names only for Connect: and GreetPause:,
// and the empty key only for ClientRate: and ClientConn:; mxguard does both
// for every client tag, which is what entries such as ClientRate:localhost
// are written for.
func (m *Map) LookupClient(tag, host string, addr netip.Addr) (Entry, bool) {
	if i, ok := m.client(tag, host, addr); ok {
		return m.entries[i], true
	}
	return Entry{}, false
}

// ClientNumber is LookupClient for the numeric tags: ClientRate (connections
// per window), ClientConn (concurrent connections) and GreetPause
// (milliseconds). A value of 0 means no limit and is returned as 0 with ok
// true; ok is false when nothing matched or tag is not numeric.
func (m *Map) ClientNumber(tag, host string, addr netip.Addr) (n int, e Entry, ok bool) {
	i, ok := m.client(tag, host, addr)
	if !ok || m.num[i] < 0 {
		return 0, Entry{}, false
	}
	return int(m.num[i]), m.entries[i], true
}

func (m *Map) client(tag, host string, addr netip.Addr) (int32, bool) {
	t := m.table(tag)
	if t == nil {
		return 0, false
	}
	addr = addr.Unmap().WithZone("")
	if host != "" {
		if len(t.names) > 0 {
			var buf [hostBuf]byte
			if i, ok := t.walk(lowerName(buf[:0], strings.TrimSuffix(host, "."))); ok && !m.skip[i] {
				return i, true
			}
		}
	} else if addr.IsValid() {
		if i, ok := t.literals.Lookup(addr); ok && !m.skip[i] {
			return i, true
		}
	}
	if addr.IsValid() {
		if i, ok := t.nets.Lookup(addr); ok && !m.skip[i] {
			return i, true
		}
	}
	if t.def >= 0 && !m.skip[t.def] {
		return t.def, true
	}
	return 0, false
}

// walk looks up name and its parent domains, as sendmail's ruleset D does:
// a.b.c, .b.c, b.c, .c, c. The first key found ends the walk.
func (t *table) walk(name []byte) (int32, bool) {
	for i := 0; i < len(name); {
		if v, ok := t.names[string(name[i:])]; ok {
			return v, true
		}
		j := bytes.IndexByte(name[i:], '.')
		if j < 0 {
			break
		}
		i += j
		if t.dotted {
			if v, ok := t.names[string(name[i:])]; ok {
				return v, true
			}
		}
		i++
	}
	return 0, false
}

// lowerName appends s to dst with ASCII letters in lower case: a DNS name,
// or an address whose local part sendmail folds as well.
func lowerName(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// LookupAddress finds the entry of tag (From, To or Spam) for an envelope
// address, in sendmail's order, stopping at the first match:
//
//   - From: and To: the full address (F), then its local part with a
//     trailing @ (U), then the domain and each parent domain (D);
//   - Spam: full address, domain and parents, local part.
//
// The full address is tried as user+detail@domain, user+*@domain and
// user@domain, the local part likewise as user+detail@, user+*@, user@. A
// domain literal such as [192.0.2.1] matches keys in brackets, including
// sendmail's shortened [192.0.2] and CIDR networks. An address without a
// domain is looked up by its local part only. SKIP on a domain key ends the
// domain stage. Case does not matter; surrounding <> are ignored; the null
// sender <> matches nothing, since sendmail must accept it.
//
// Sendmail consults the local part of a recipient only when the recipient's
// domain is local; for one that is not, use LookupRemoteRecipient.
func (m *Map) LookupAddress(tag, address string) (Entry, bool) {
	if i, ok := m.envelope(tag, address, true); ok {
		return m.entries[i], true
	}
	return Entry{}, false
}

// LookupRemoteRecipient is LookupAddress for a recipient in a domain that is
// not local: the local part alone is not looked up, so that To:postmaster@,
// meant for our own postmaster, does not also refuse a relayed
// postmaster@example.org.
func (m *Map) LookupRemoteRecipient(tag, address string) (Entry, bool) {
	if i, ok := m.envelope(tag, address, false); ok {
		return m.entries[i], true
	}
	return Entry{}, false
}

func (m *Map) envelope(tag, address string, withUser bool) (int32, bool) {
	t := m.table(tag)
	if t == nil {
		return 0, false
	}
	address = strings.TrimSpace(address)
	if len(address) >= 2 && address[0] == '<' && address[len(address)-1] == '>' {
		address = address[1 : len(address)-1]
	}
	address = strings.TrimSuffix(address, ".")
	if address == "" {
		return 0, false
	}
	var buf, scratch [addrBuf]byte
	a := lowerName(buf[:0], address)
	at := bytes.LastIndexByte(a, '@')
	if at < 0 {
		// Unqualified: only user@ applies; the user is local by definition.
		a = append(a, '@')
		return m.stage(t.user(a, scratch[:0]))
	}
	if at == 0 || at == len(a)-1 {
		return 0, false // no local part or no domain: not an address
	}
	if i, ok := m.stage(t.full(a, at, scratch[:0])); ok {
		return i, true
	}
	domainFirst := strings.EqualFold(strings.TrimSuffix(tag, ":"), TagSpam)
	if domainFirst {
		if i, ok := m.stage(t.domain(a[at+1:], address[at+1:])); ok {
			return i, true
		}
	}
	if withUser {
		if i, ok := m.stage(t.user(a[:at+1], scratch[:0])); ok {
			return i, true
		}
	}
	if !domainFirst {
		return m.stage(t.domain(a[at+1:], address[at+1:]))
	}
	return 0, false
}

// stage returns the result of one stage of a search: a SKIP found there
// ends the stage without a match, and the search goes on with the next.
func (m *Map) stage(i int32, ok bool) (int32, bool) {
	if !ok || m.skip[i] {
		return 0, false
	}
	return i, true
}

// full looks up user@domain (a, with @ at index at): as written, then, if
// the local part has a +detail, as user+*@domain and user@domain.
func (t *table) full(a []byte, at int, scratch []byte) (int32, bool) {
	if len(t.names) == 0 {
		return 0, false
	}
	if v, ok := t.names[string(a)]; ok {
		return v, true
	}
	plus := bytes.IndexByte(a[:at], '+')
	if plus <= 0 {
		return 0, false
	}
	k := append(append(append(scratch, a[:plus]...), "+*"...), a[at:]...)
	if v, ok := t.names[string(k)]; ok {
		return v, true
	}
	k = append(append(scratch, a[:plus]...), a[at:]...)
	v, ok := t.names[string(k)]
	return v, ok
}

// user looks up a local part with its trailing @ (u): as written, then as
// user+*@ and user@ if it has a +detail.
func (t *table) user(u []byte, scratch []byte) (int32, bool) {
	if len(t.names) == 0 {
		return 0, false
	}
	if v, ok := t.names[string(u)]; ok {
		return v, true
	}
	plus := bytes.IndexByte(u, '+')
	if plus <= 0 {
		return 0, false
	}
	k := append(append(scratch, u[:plus]...), "+*@"...)
	if v, ok := t.names[string(k)]; ok {
		return v, true
	}
	k = append(append(scratch, u[:plus]...), '@')
	v, ok := t.names[string(k)]
	return v, ok
}

// domain looks up the domain of an address (d in lower case, orig as
// written) and its parents, or, for a domain literal, the bracketed keys
// that contain the address.
func (t *table) domain(d []byte, orig string) (int32, bool) {
	if len(d) >= 2 && d[0] == '[' && d[len(d)-1] == ']' {
		if v, ok := t.names[string(d)]; ok { // [unix:localhost] and the like
			return v, true
		}
		inner := orig[1 : len(orig)-1]
		if hasPrefixFold(inner, "IPv6:") {
			inner = inner[len("IPv6:"):]
		}
		a, err := netip.ParseAddr(inner)
		if err != nil || a.Zone() != "" {
			return 0, false
		}
		return t.literals.Lookup(a.Unmap())
	}
	if len(t.names) == 0 {
		return 0, false
	}
	return t.walk(d)
}

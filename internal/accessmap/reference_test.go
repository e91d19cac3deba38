package accessmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The functions here look entries up the slow, obvious way: for every key
// sendmail would try, in its order, scan all entries. The indexed lookups
// must agree with them on any map and any query.

type refEntry struct {
	Entry
	key parsedKey
}

func refEntries(m *Map, tag string) (tagged, untagged []refEntry) {
	tag = strings.TrimSuffix(tag, ":")
	ti := tagIndex(tag)
	for e := range m.All() {
		var k parsedKey
		if tagIndex(e.Tag) >= 0 || e.Tag == "" {
			var err error
			if k, err = parseKey(e.Key); err != nil {
				panic(fmt.Sprintf("stored key %q does not parse: %v", e.Key, err))
			}
		} else {
			k = parsedKey{kind: keyName, name: e.Key}
			if e.Key == "" {
				k.kind = keyDefault
			}
		}
		switch {
		case strings.EqualFold(e.Tag, tag):
			tagged = append(tagged, refEntry{e, k})
		case e.Tag == "" && (ti == tConnect || ti == tFrom || ti == tTo):
			untagged = append(untagged, refEntry{e, k})
		}
	}
	return tagged, untagged
}

func isSkip(e Entry) bool { return strings.EqualFold(e.Value, "SKIP") }

// refFind returns the entry with exactly this key, tagged before untagged.
func refFind(tagged, untagged []refEntry, kind keyKind, name string) (Entry, bool) {
	for _, list := range [][]refEntry{tagged, untagged} {
		for _, e := range list {
			if e.key.kind == kind && (kind != keyName || e.key.name == name) {
				return e.Entry, true
			}
		}
	}
	return Entry{}, false
}

// refLongest returns the entry of the given kind with the longest prefix
// containing a, tagged before untagged for the same prefix.
func refLongest(tagged, untagged []refEntry, kind keyKind, a netip.Addr) (Entry, bool) {
	var best Entry
	bits := -1
	for _, list := range [][]refEntry{tagged, untagged} {
		for _, e := range list {
			if e.key.kind == kind && e.key.prefix.Contains(a) && e.key.prefix.Bits() > bits {
				best, bits = e.Entry, e.key.prefix.Bits()
			}
		}
	}
	return best, bits >= 0
}

// refWalk returns the candidates sendmail's ruleset D tries for a name.
func refWalk(name string) []string {
	var keys []string
	for name != "" {
		keys = append(keys, name)
		i := strings.IndexByte(name, '.')
		if i < 0 {
			break
		}
		keys = append(keys, name[i:])
		name = name[i+1:]
	}
	return keys
}

func refNames(tagged, untagged []refEntry, keys []string) (Entry, bool) {
	for _, k := range keys {
		if e, ok := refFind(tagged, untagged, keyName, k); ok {
			return e, true
		}
	}
	return Entry{}, false
}

func refClient(m *Map, tag, host string, addr netip.Addr) (Entry, bool) {
	tagged, untagged := refEntries(m, tag)
	addr = addr.Unmap().WithZone("")
	if host != "" {
		name := strings.TrimSuffix(refLower(host), ".")
		if e, ok := refNames(tagged, untagged, refWalk(name)); ok && !isSkip(e) {
			return e, true
		}
	} else if addr.IsValid() {
		if e, ok := refLongest(tagged, untagged, keyLiteral, addr); ok && !isSkip(e) {
			return e, true
		}
	}
	if addr.IsValid() {
		if e, ok := refLongest(tagged, untagged, keyNet, addr); ok && !isSkip(e) {
			return e, true
		}
	}
	if e, ok := refFind(tagged, nil, keyDefault, ""); ok && !isSkip(e) {
		return e, true
	}
	return Entry{}, false
}

func refAddress(m *Map, tag, address string, withUser bool) (Entry, bool) {
	tagged, untagged := refEntries(m, tag)
	address = strings.TrimSpace(address)
	if len(address) >= 2 && address[0] == '<' && address[len(address)-1] == '>' {
		address = address[1 : len(address)-1]
	}
	a := refLower(strings.TrimSuffix(address, "."))
	at := strings.LastIndexByte(a, '@')
	userKeys := func(local string) []string {
		keys := []string{local + "@"}
		if p := strings.IndexByte(local, '+'); p > 0 {
			keys = append(keys, local[:p]+"+*@", local[:p]+"@")
		}
		return keys
	}
	switch {
	case a == "":
		return Entry{}, false
	case at < 0:
		return refNames(tagged, untagged, userKeys(a))
	case at == 0 || at == len(a)-1:
		return Entry{}, false
	}
	local, domain := a[:at], a[at+1:]
	full := []string{a}
	if p := strings.IndexByte(local, '+'); p > 0 {
		full = append(full, local[:p]+"+*@"+domain, local[:p]+"@"+domain)
	}
	stages := []func() (Entry, bool){
		func() (Entry, bool) { return refNames(tagged, untagged, full) },
		func() (Entry, bool) {
			if !withUser {
				return Entry{}, false
			}
			return refNames(tagged, untagged, userKeys(local))
		},
		func() (Entry, bool) {
			if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
				if e, ok := refFind(tagged, untagged, keyName, domain); ok {
					return e, true
				}
				inner := strings.TrimPrefix(domain[1:len(domain)-1], "ipv6:")
				ip, err := netip.ParseAddr(inner)
				if err != nil || ip.Zone() != "" {
					return Entry{}, false
				}
				return refLongest(tagged, untagged, keyLiteral, ip.Unmap())
			}
			return refNames(tagged, untagged, refWalk(domain))
		},
	}
	if strings.EqualFold(strings.TrimSuffix(tag, ":"), TagSpam) {
		stages[1], stages[2] = stages[2], stages[1]
	}
	for _, s := range stages {
		if e, ok := s(); ok && !isSkip(e) {
			return e, true
		}
	}
	return Entry{}, false
}

// refLower folds ASCII letters byte by byte and leaves every other byte
// alone (strings.Map would turn invalid UTF-8 into U+FFFD).
func refLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// checkAgainstReference compares every lookup method with the reference for
// one query.
func checkAgainstReference(t *testing.T, m *Map, tag, host string, addr netip.Addr, address string) {
	t.Helper()
	got, gotOK := m.LookupClient(tag, host, addr)
	want, wantOK := refClient(m, tag, host, addr)
	if got != want || gotOK != wantOK {
		t.Fatalf("LookupClient(%s, %q, %v) = %+v, %v; reference %+v, %v", tag, host, addr, got, gotOK, want, wantOK)
	}
	if n, e, ok := m.ClientNumber(tag, host, addr); ok {
		if v, err := strconv.Atoi(e.Value); e != want || err != nil || v != n {
			t.Fatalf("ClientNumber(%s, %q, %v) = %d, %+v; reference %+v", tag, host, addr, n, e, want)
		}
	}
	for _, withUser := range []bool{true, false} {
		var got Entry
		var gotOK bool
		if withUser {
			got, gotOK = m.LookupAddress(tag, address)
		} else {
			got, gotOK = m.LookupRemoteRecipient(tag, address)
		}
		want, wantOK := refAddress(m, tag, address, withUser)
		if got != want || gotOK != wantOK {
			t.Fatalf("envelope lookup (user %v) (%s, %q) = %+v, %v; reference %+v, %v", withUser, tag, address, got, gotOK, want, wantOK)
		}
	}
}

// randomMap writes an access map whose keys come from a small universe, so
// that queries from the same universe hit often, at every stage.
func randomMap(r *rand.Rand, lines int) string {
	pick := func(s ...string) string { return s[r.IntN(len(s))] }
	var b strings.Builder
	for range lines {
		tag := pick("Connect:", "Connect:", "ClientRate:", "From:", "To:", "Spam:", "")
		var key string
		switch r.IntN(9) {
		case 0:
			key = randomHost(r)
		case 1:
			key = "." + randomHost(r)
		case 2:
			a := randomV4(r).As4()
			var parts []string
			for _, x := range a[:1+r.IntN(4)] {
				parts = append(parts, strconv.Itoa(int(x)))
			}
			key = strings.Join(parts, ".")
		case 3:
			key = netip.PrefixFrom(randomV4(r), r.IntN(33)).Masked().String()
		case 4:
			a := randomV6(r).As16()
			n := 1 + r.IntN(7)
			var g []string
			for i := range n {
				g = append(g, fmt.Sprintf("%x", uint16(a[2*i])<<8|uint16(a[2*i+1])))
			}
			key = "IPv6:" + strings.Join(g, ":")
		case 5:
			key = "IPv6:" + netip.PrefixFrom(randomV6(r), r.IntN(129)).Masked().String()
		case 6:
			key = "[" + netip.PrefixFrom(randomV4(r), 8*(1+r.IntN(4))).Masked().Addr().String() + "]"
		case 7:
			key = pick("u", "v", "u+x", "u+*") + "@" + pick("", randomHost(r))
		case 8:
			if tag == "" {
				key = randomHost(r)
			} else {
				key = ""
			}
		}
		var value string
		switch tag {
		case "ClientRate:":
			value = fmt.Sprint(r.IntN(3))
		case "Spam:":
			value = pick("FRIEND", "HATER")
		default:
			value = pick("OK", "REJECT", "RELAY", "DISCARD", "SKIP")
			if value == "SKIP" && strings.Contains(key, "@") {
				value = "OK"
			}
		}
		fmt.Fprintf(&b, "%s%s %s\n", tag, key, value)
	}
	return b.String()
}

func randomHost(r *rand.Rand) string {
	labels := []string{"a", "mx", "b.a", "x"}
	return labels[r.IntN(len(labels))] + "." + []string{"example", "test"}[r.IntN(2)] + "." + []string{"com", "org"}[r.IntN(2)]
}

func randomV4(r *rand.Rand) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(r.IntN(2)), byte(r.IntN(3)), byte(r.IntN(4))})
}

func randomV6(r *rand.Rand) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(r.IntN(2)), 0, byte(r.IntN(2)), 15: byte(r.IntN(4))})
}

func TestLookupMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		text := randomMap(r, 1+r.IntN(40))
		m, err := Parse(strings.NewReader(text), fmt.Sprintf("random%d", round))
		if err != nil {
			t.Fatalf("generated map does not parse: %v\n%s", err, text)
		}
		for range 50 {
			tag := []string{TagConnect, TagClientRate, TagFrom, TagTo, TagSpam}[r.IntN(5)]
			host := ""
			if r.IntN(3) > 0 {
				host = []string{"", "q."}[r.IntN(2)] + randomHost(r)
				if r.IntN(5) == 0 {
					host = strings.ToUpper(host) + "."
				}
			}
			var addr netip.Addr
			switch r.IntN(4) {
			case 0:
				addr = randomV4(r)
			case 1:
				addr = randomV6(r)
			case 2:
				addr = netip.AddrFrom16(randomV4(r).As16())
			}
			local := []string{"u", "v", "u+x", "w+y", "U+X"}[r.IntN(5)]
			domain := randomHost(r)
			if r.IntN(4) == 0 {
				domain = "[" + randomV4(r).String() + "]"
			}
			address := local + "@" + domain
			if r.IntN(6) == 0 {
				address = local
			}
			checkAgainstReference(t, m, tag, host, addr, address)
		}
	}
}

func TestReferenceAgreesOnFixtures(t *testing.T) {
	m := mustParse(t, clientMap+envelopeMap)
	hosts := []string{"", "mail.example.com", "a.sub.example.org", "skip.example.com", "foo.bar.com"}
	addrs := []string{"", "192.0.2.7", "10.1.2.3", "198.51.100.3", "2001:db8:1::5", "2001:db8:3::1", "::ffff:203.0.113.5"}
	addresses := []string{"user+foo@example.net", "bob@sub.example.org", "x@[192.0.2.5]", "carol@example.com", "free.stealth.mailer"}
	for _, h := range hosts {
		for _, a := range addrs {
			var ip netip.Addr
			if a != "" {
				ip = netip.MustParseAddr(a)
			}
			for _, tag := range []string{TagConnect, TagFrom, TagSpam} {
				checkAgainstReference(t, m, tag, h, ip, addresses[len(h)%len(addresses)])
			}
		}
	}
	for _, ad := range addresses {
		checkAgainstReference(t, m, TagFrom, "", netip.Addr{}, ad)
	}
	if !slices.ContainsFunc(slices.Collect(m.All()), func(e Entry) bool { return e.Key == "[192.0.2]" }) {
		t.Error("fixture lost an entry")
	}
}

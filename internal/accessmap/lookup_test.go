package accessmap

import (
	"net/netip"
	"testing"
)

// clientMap exercises every rule of the client lookup order. Each value is
// unique where it matters so a test can tell which entry matched by line.
const clientMap = `# line 1
Connect:example.com             REJECT
Connect:mail.example.com        OK
Connect:.sub.example.org        RELAY
Connect:sub.example.org         DISCARD
Connect:com                     ERROR:"550 no com"
Connect:192.0.2.1               OK
Connect:192.0.2                 REJECT
Connect:198.51                  RELAY
Connect:198.51.100.0/25         REJECT
Connect:10                      REJECT
Connect:10.1.0.0/16             OK
Connect:10.1.2                  SKIP
Connect:IPv6:2001:db8           RELAY
Connect:IPv6:2001:db8:1::5      REJECT
Connect:IPv6:2001:db8:2::/48    OK
Connect:[192.0.2.7]             OK
Connect:[203.0.113]             REJECT
Connect:skip.example.com        SKIP
Connect:[IPv6:2001:db8:3::/64]  DISCARD
Connect:0.0.0.0/0               DISCARD
`

func TestLookupClientOrder(t *testing.T) {
	m := mustParse(t, clientMap)
	tests := []struct {
		name, host, addr string
		line             int // 0: no match
	}{
		{"host before address", "mail.example.com", "192.0.2.50", 3},
		{"exact host", "example.com", "", 2},
		{"parent domain", "a.b.example.com", "192.0.2.1", 2},
		{"top-level domain", "foo.bar.com", "", 6},
		{"dot key below its domain", "a.sub.example.org", "", 4},
		{"dot key two below", "x.a.sub.example.org", "", 4},
		{"dot key not the domain itself", "sub.example.org", "", 5},
		{"host misses, address hits", "unknown.example.net", "192.0.2.1", 7},
		{"upper case and root dot", "MAIL.Example.COM.", "", 3},
		{"dotted /32", "", "192.0.2.1", 7},
		{"dotted /24", "", "192.0.2.99", 8},
		{"dotted /16", "", "198.51.7.7", 9},
		{"CIDR longer than dotted", "", "198.51.100.3", 10},
		{"dotted outside CIDR", "", "198.51.100.200", 9},
		{"dotted /8", "", "10.9.9.9", 11},
		{"CIDR /16 beats dotted /8", "", "10.1.9.9", 12},
		{"SKIP ends the address stage", "", "10.1.2.3", 0},
		{"SKIP in the host stage moves on to the address", "skip.example.com", "192.0.2.1", 7},
		{"SKIP on a parent", "a.skip.example.com", "", 0},
		{"IPv6 partial /32", "", "2001:db8::1", 14},
		{"IPv6 full address", "", "2001:db8:1::5", 15},
		{"IPv6 near miss", "", "2001:db8:1::6", 14},
		{"IPv6 CIDR /48", "", "2001:db8:2::9", 16},
		{"IPv6 outside", "", "2001:db9::1", 0},
		{"IPv6 zone ignored", "", "2001:db8:1::5%eth0", 15},
		{"IPv4-mapped is IPv4", "", "::ffff:192.0.2.1", 7},
		{"literal for a client without a name", "", "192.0.2.7", 17},
		{"literal prefix", "", "203.0.113.5", 18},
		{"literal not for a named client", "x.example.net", "192.0.2.7", 8},
		{"named client outside literal networks", "x.example.net", "203.0.113.5", 21},
		{"IPv6 literal network", "", "2001:db8:3::1", 20},
		{"CIDR /0 catches all IPv4", "", "203.0.114.1", 21},
		{"no address, no host", "", "", 0},
		{"name only", "nowhere.example.net", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a netip.Addr
			if tt.addr != "" {
				a = netip.MustParseAddr(tt.addr)
			}
			e, ok := m.LookupClient(TagConnect, tt.host, a)
			if tt.line == 0 {
				if ok {
					t.Errorf("LookupClient(%q, %s) = %s (line %d), want no match", tt.host, tt.addr, e, e.Line)
				}
				return
			}
			if !ok || e.Line != tt.line {
				t.Errorf("LookupClient(%q, %s) = %s (line %d), %v; want line %d", tt.host, tt.addr, e, e.Line, ok, tt.line)
			}
		})
	}
}

func TestLookupClientDefault(t *testing.T) {
	m := mustParse(t, `
ClientRate:example.com   0
ClientRate:192.0.2       10
ClientRate:              5
ClientConn:10.0.0.0/8    0
Connect:                 REJECT
Connect:10.1             SKIP
Connect:                 SKIP
`)
	tests := []struct {
		tag, host, addr string
		n               int
		ok              bool
	}{
		{TagClientRate, "a.example.com", "203.0.113.1", 0, true}, // 0 = unlimited, still a match
		{TagClientRate, "", "192.0.2.9", 10, true},
		{TagClientRate, "x.example.net", "203.0.113.1", 5, true}, // default
		{TagClientRate, "", "", 5, true},
		{TagClientConn, "", "10.2.3.4", 0, true},
		{TagClientConn, "", "11.2.3.4", 0, false}, // no default
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.addr != "" {
			a = netip.MustParseAddr(tt.addr)
		}
		n, _, ok := m.ClientNumber(tt.tag, tt.host, a)
		if n != tt.n || ok != tt.ok {
			t.Errorf("ClientNumber(%s, %q, %s) = %d, %v; want %d, %v", tt.tag, tt.host, tt.addr, n, ok, tt.n, tt.ok)
		}
	}
	// A later Connect: SKIP replaced the REJECT default: no default at all.
	if e, ok := m.LookupClient(TagConnect, "", netip.MustParseAddr("10.1.2.3")); ok {
		t.Errorf("SKIP default matched: %s", e)
	}
}

func TestLookupClientDefaultAfterSkip(t *testing.T) {
	m := mustParse(t, "Connect:10.1 SKIP\nConnect:10 RELAY\nConnect: REJECT\n")
	e, ok := m.LookupClient(TagConnect, "", netip.MustParseAddr("10.1.2.3"))
	if !ok || e.Line != 3 {
		t.Errorf("LookupClient after SKIP = %s, %v; want the default (line 3)", e, ok)
	}
	if e, _ := m.LookupClient(TagConnect, "", netip.MustParseAddr("10.2.0.1")); e.Line != 2 {
		t.Errorf("LookupClient(10.2.0.1) = %s, want line 2", e)
	}
}

// envelopeMap follows the examples of sendmail's cf/README.
const envelopeMap = `# line 1
From:spammer@aol.com            REJECT
From:cyberspammer.com           ERROR:"550 We don't accept mail from spammers"
From:okay.cyberspammer.com      OK
From:free.stealth.mailer@       ERROR:550 Spam not accepted
From:user+*@example.net         DISCARD
From:user@example.net           REJECT
From:list+*@                    OK
From:[192.0.2]                  OK
From:skip.example.com           SKIP
From:example.com                REJECT
From:bob@example.org            OK
From:bob@                       REJECT
From:example.org                RELAY
From:[unix:localhost]           OK
To:badlocaluser@                ERROR:550 Mailbox disabled for badlocaluser
To:host.my.tld                  ERROR:550 That host does not accept mail
To:user@other.my.tld            ERROR:550 Mailbox disabled for this recipient
Spam:carol@                     FRIEND
Spam:example.com                HATER
Spam:abuse@my.domain            FRIEND
Spam:me+abuse@                  FRIEND
`

func TestLookupAddressOrder(t *testing.T) {
	m := mustParse(t, envelopeMap)
	tests := []struct {
		name, tag, addr string
		line            int
	}{
		{"full address", TagFrom, "spammer@aol.com", 2},
		{"case-insensitive, brackets, root dot", TagFrom, "<Spammer@AOL.Com.>", 2},
		{"other user at the domain", TagFrom, "other@aol.com", 0},
		{"parent domain", TagFrom, "x@mail.cyberspammer.com", 3},
		{"more specific domain", TagFrom, "y@okay.cyberspammer.com", 4},
		{"user@ for any domain", TagFrom, "free.stealth.mailer@anywhere.org", 5},
		{"+detail: user+*@domain before user@domain", TagFrom, "user+foo@example.net", 6},
		{"no detail: user@domain", TagFrom, "user@example.net", 7},
		{"+detail on user@", TagFrom, "list+news@any.org", 8},
		{"detail-less list@ is not list+*@", TagFrom, "list@any.org", 0},
		{"full before user@", TagFrom, "bob@example.org", 12},
		{"user@ before domain", TagFrom, "bob@sub.example.org", 13},
		{"domain when nothing else", TagFrom, "alice@example.org", 14},
		{"domain literal prefix", TagFrom, "x@[192.0.2.5]", 9},
		{"domain literal miss", TagFrom, "x@[192.0.3.5]", 0},
		{"non-IP literal", TagFrom, "x@[UNIX:localhost]", 15},
		{"SKIP ends the domain stage", TagFrom, "a@skip.example.com", 0},
		{"SKIP on a parent", TagFrom, "a@x.skip.example.com", 0},
		{"unqualified sender: user@ only", TagFrom, "free.stealth.mailer", 5},
		{"null sender", TagFrom, "<>", 0},
		{"empty", TagFrom, "", 0},
		{"no local part", TagFrom, "@example.org", 0},
		{"recipient user@", TagTo, "badlocaluser@localhost", 16},
		{"recipient host", TagTo, "anyone@host.my.tld", 17},
		{"recipient full", TagTo, "user@other.my.tld", 18},
		{"Spam: domain before user@", TagSpam, "carol@example.com", 20},
		{"Spam: user@", TagSpam, "carol@elsewhere.net", 19},
		{"Spam: full", TagSpam, "abuse@my.domain", 21},
		{"Spam: +detail user@", TagSpam, "me+abuse@my.domain", 22},
		{"Spam: other detail", TagSpam, "me+other@my.domain", 0},
		{"no such tag", "Nope", "spammer@aol.com", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := m.LookupAddress(tt.tag, tt.addr)
			if tt.line == 0 {
				if ok {
					t.Errorf("LookupAddress(%s, %q) = %s (line %d), want no match", tt.tag, tt.addr, e, e.Line)
				}
				return
			}
			if !ok || e.Line != tt.line {
				t.Errorf("LookupAddress(%s, %q) = %s (line %d), %v; want line %d", tt.tag, tt.addr, e, e.Line, ok, tt.line)
			}
		})
	}
}

func TestLookupRemoteRecipient(t *testing.T) {
	m := mustParse(t, envelopeMap)
	tests := []struct {
		tag, addr string
		line      int
	}{
		{TagTo, "badlocaluser@example.com", 0}, // user@ is for local domains only
		{TagTo, "user@other.my.tld", 18},
		{TagTo, "x@host.my.tld", 17},
		{TagSpam, "carol@elsewhere.net", 0},
		{TagSpam, "carol@example.com", 20},
	}
	for _, tt := range tests {
		e, ok := m.LookupRemoteRecipient(tt.tag, tt.addr)
		if (tt.line == 0) == ok || (ok && e.Line != tt.line) {
			t.Errorf("LookupRemoteRecipient(%s, %q) = %s (line %d), %v; want line %d", tt.tag, tt.addr, e, e.Line, ok, tt.line)
		}
	}
}

func TestEntryAction(t *testing.T) {
	m := mustParse(t, envelopeMap)
	e, ok := m.LookupAddress(TagFrom, "x@cyberspammer.com")
	if !ok {
		t.Fatal("no match")
	}
	a, err := e.Action()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.Reply().String(), "550 5.0.0 We don't accept mail from spammers"; got != want {
		t.Errorf("Reply() = %q, want %q", got, want)
	}
}

func TestLookupAllocs(t *testing.T) {
	m := mustParse(t, clientMap+envelopeMap+"ClientRate: 5\n")
	v4 := netip.MustParseAddr("198.51.100.3")
	v6 := netip.MustParseAddr("2001:db8:2::9")
	checks := map[string]func(){
		"client host hit":  func() { m.LookupClient(TagConnect, "a.b.example.com", v4) },
		"client host miss": func() { m.LookupClient(TagConnect, "a.b.example.net", v4) },
		"client upper":     func() { m.LookupClient("connect", "A.B.Example.NET.", v6) },
		"client literal":   func() { m.LookupClient(TagConnect, "", v4) },
		"number":           func() { m.ClientNumber(TagClientRate, "x.example.com", v6) },
		"address detail":   func() { m.LookupAddress(TagFrom, "user+foo@example.net") },
		"address miss":     func() { m.LookupAddress(TagFrom, "Nobody+x@Nowhere.Example") },
		"address literal":  func() { m.LookupAddress(TagFrom, "x@[192.0.2.5]") },
		"spam":             func() { m.LookupRemoteRecipient(TagSpam, "carol@elsewhere.net") },
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
}

func TestConcurrentLookups(t *testing.T) {
	m := mustParse(t, clientMap+envelopeMap)
	addr := netip.MustParseAddr("198.51.100.3")
	done := make(chan bool)
	for range 4 {
		go func() {
			ok := true
			for range 1000 {
				e, found := m.LookupClient(TagConnect, "a.sub.example.org", addr)
				f, found2 := m.LookupAddress(TagFrom, "user+x@example.net")
				ok = ok && found && found2 && e.Line == 4 && f.Line == 27
			}
			done <- ok
		}()
	}
	for range 4 {
		if !<-done {
			t.Error("a concurrent lookup returned a wrong entry")
		}
	}
}

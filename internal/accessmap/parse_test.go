package accessmap

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func mustParse(t testing.TB, text string) *Map {
	t.Helper()
	m, err := Parse(strings.NewReader(text), "access")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

func TestLoadSeed(t *testing.T) {
	m, err := Load(filepath.Join("testdata", "seed.access"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Len(), 11; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	if w := m.Warnings(); len(w) != 0 {
		t.Errorf("Warnings() = %q, want none", w)
	}
	localhost := netip.MustParseAddr("127.0.0.1")
	stranger := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		tag, host string
		addr      netip.Addr
		n         int
		key       string
		ok        bool
	}{
		{TagClientRate, "localhost", localhost, 0, "localhost", true},
		{TagClientRate, "localhost.localdomain", localhost, 0, "localhost.localdomain", true},
		{TagClientRate, "", localhost, 0, "127.0.0.1", true},
		{TagClientRate, "mx.example.com", localhost, 0, "127.0.0.1", true},
		{TagClientRate, "mx.example.com", stranger, 5, "", true},
		{TagClientRate, "", stranger, 5, "", true},
		{TagClientConn, "localhost", localhost, 0, "localhost", true},
		{TagClientConn, "mx.example.com", stranger, 3, "", true},
		{TagGreetPause, "localhost", stranger, 0, "localhost", true},
		{TagGreetPause, "", localhost, 0, "127.0.0.1", true},
		// No GreetPause: default: the configured greet_pause applies.
		{TagGreetPause, "mx.example.com", stranger, 0, "", false},
		// Connect: is not numeric, and absent.
		{TagConnect, "localhost", localhost, 0, "", false},
	}
	for _, tt := range tests {
		n, e, ok := m.ClientNumber(tt.tag, tt.host, tt.addr)
		if n != tt.n || ok != tt.ok || (ok && e.Key != tt.key) {
			t.Errorf("ClientNumber(%s, %q, %v) = %d, %s, %v; want %d, %s:%s, %v",
				tt.tag, tt.host, tt.addr, n, e, ok, tt.n, tt.tag, tt.key, tt.ok)
		}
	}
	if _, e, _ := m.ClientNumber(TagClientRate, "", stranger); e.Line != 7 || e.Value != "5" || e.String() != "ClientRate:" {
		t.Errorf("default entry = %+v (%s), want line 7, value 5", e, e)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, text string
		want       []string // each a substring of one error, in order
	}{
		{"bad number", "ClientRate:1.2.3.4 five\n", []string{`access:1: ClientRate:1.2.3.4: value "five" is not a non-negative integer`}},
		{"negative", "\n\nClientConn: -1\n", []string{`access:3: ClientConn:: value "-1"`}},
		{"too big", "GreetPause: 99999999999\n", []string{"access:1:"}},
		{"bad action", "Connect:example.com ACCEPT\n", []string{`access:1: Connect:example.com: unknown action "ACCEPT"`}},
		{"bad error", "From:x.org ERROR:hello\n", []string{"access:1: From:x.org: error reply"}},
		{"spam value", "Spam:abuse@ OK\n", []string{`access:1: Spam:abuse@: value "OK" must be FRIEND or HATER`}},
		{"friend elsewhere", "To:abuse@ FRIEND\n", []string{"FRIEND is only a value for Spam:"}},
		{"skip on address", "From:a@b.c SKIP\n", []string{"SKIP applies only to host, domain and address keys"}},
		{"no value", "Connect:example.com\n", []string{"access:1: Connect:example.com has no value"}},
		{"bad cidr", "Connect:10.0.0.0/33 REJECT\n", []string{`access:1: Connect:10.0.0.0/33: bad CIDR network "10.0.0.0/33"`}},
		{"bad ipv4", "Connect:1.2.3.256 REJECT\n", []string{`bad IPv4 key "1.2.3.256"`}},
		{"five numbers", "Connect:1.2.3.4.5 REJECT\n", []string{"more than four numbers"}},
		{"leading zero", "Connect:10.01 REJECT\n", []string{"leading zeros"}},
		{"bad ipv6", "Connect:IPv6:2001:db8:xyz RELAY\n", []string{`bad IPv6 key "ipv6:2001:db8:xyz"`}},
		{"ipv6 trailing colon", "Connect:IPv6:2001:db8: RELAY\n", []string{"bad IPv6 key"}},
		{"ipv6 tag on v4 net", "Connect:IPv6:10.0.0.0/8 RELAY\n", []string{"IPv6: in front of the IPv4 network"}},
		{"bad literal", "Connect:[1.2.3.999] OK\n", []string{"bad IPv4 key"}},
		{"all collected", "Connect:a ACCEPT\n# fine\nConnect:b OK\nClientRate:c x\nTo:d\n",
			[]string{"access:1:", "access:4:", "access:5:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(strings.NewReader(tt.text), "access")
			if err == nil {
				t.Fatalf("Parse succeeded with %d entries; want errors %q", m.Len(), tt.want)
			}
			if m != nil {
				t.Errorf("Parse returned a map along with an error")
			}
			var errs []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			} else {
				errs = []error{err}
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors (%v), want %d", len(errs), err, len(tt.want))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.want[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, e, tt.want[i])
				}
				var le *LineError
				if !errors.As(e, &le) || le.File != "access" || le.Line < 1 {
					t.Errorf("error %d = %#v, want a *LineError naming file and line", i, e)
				}
			}
		})
	}
}

// TestParseTooManyErrors: past maxErrors the errors are counted to the end
// of the file, not listed, and not dropped silently.
func TestParseTooManyErrors(t *testing.T) {
	text := strings.Repeat("Connect:x BOGUS\n", 1000) + "Connect:y OK\nConnect:z BOGUS\n"
	_, err := Parse(strings.NewReader(text), "access")
	if err == nil || !strings.HasSuffix(err.Error(), "access: 951 more errors not shown") {
		t.Fatalf("err = %v, want the count of the errors not shown", err)
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != maxErrors+1 {
		t.Errorf("%d errors, want %d", n, maxErrors+1)
	}
}

func TestParseLongLine(t *testing.T) {
	text := "Connect:a OK\nConnect:" + strings.Repeat("x", maxLine) + " OK\n"
	_, err := Parse(strings.NewReader(text), "access")
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(err.Error(), "line longer than") {
		t.Fatalf("err = %v, want line 2 too long", err)
	}
}

func TestParseFormat(t *testing.T) {
	m := mustParse(t, "# comment\r\n\r\n   \t\n  # indented comment\nConnect:Example.COM\t\t  REJECT  \r\n"+
		"  From:Spammer@AOL.com ERROR:\"550 go away\"\nClientRate:  7\n")
	got := slices.Collect(m.All())
	want := []Entry{
		{Tag: "Connect", Key: "example.com", Value: "REJECT", Line: 5},
		{Tag: "From", Key: "spammer@aol.com", Value: `ERROR:"550 go away"`, Line: 6},
		{Tag: "ClientRate", Key: "", Value: "7", Line: 7},
	}
	if !slices.Equal(got, want) {
		t.Errorf("entries = %+v\nwant %+v", got, want)
	}
	if m.Name() != "access" {
		t.Errorf("Name() = %q", m.Name())
	}
}

func TestParseEmpty(t *testing.T) {
	m := mustParse(t, "")
	if m.Len() != 0 {
		t.Errorf("Len() = %d", m.Len())
	}
	if _, ok := m.LookupClient(TagConnect, "example.com", netip.MustParseAddr("192.0.2.1")); ok {
		t.Error("empty map matched")
	}
	if _, ok := m.LookupAddress(TagFrom, "a@example.com"); ok {
		t.Error("empty map matched")
	}
}

func TestTagsCaseInsensitive(t *testing.T) {
	m := mustParse(t, "CONNECT:example.com REJECT\nclientrate: 4\n")
	for _, tag := range []string{"Connect", "connect", "CONNECT:", "Connect:"} {
		if e, ok := m.LookupClient(tag, "example.com", netip.Addr{}); !ok || e.Tag != TagConnect {
			t.Errorf("LookupClient(%q) = %+v, %v", tag, e, ok)
		}
	}
	if n, _, ok := m.ClientNumber("CLIENTRATE", "", netip.MustParseAddr("192.0.2.1")); !ok || n != 4 {
		t.Errorf("ClientNumber = %d, %v", n, ok)
	}
}

func TestDuplicates(t *testing.T) {
	m := mustParse(t, "Connect:Example.com OK\nConnect:example.com REJECT\n"+
		"Connect:10 OK\nConnect:10.0.0.0/8 REJECT\nConnect:IPv6:2001:db8 OK\nConnect:2001:db8::/32 REJECT\n"+
		"ClientRate: 1\nClientRate: 2\nFrom:example.com OK\n")
	if got, want := m.Len(), 5; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	for _, q := range []struct {
		host string
		addr netip.Addr
		line int
	}{
		{"example.com", netip.Addr{}, 2},
		{"", netip.MustParseAddr("10.9.9.9"), 4},
		{"", netip.MustParseAddr("2001:db8::1"), 6},
	} {
		if e, ok := m.LookupClient(TagConnect, q.host, q.addr); !ok || e.Line != q.line || e.Value != "REJECT" {
			t.Errorf("LookupClient(%q, %v) = %+v, %v; want line %d", q.host, q.addr, e, ok, q.line)
		}
	}
	if n, _, _ := m.ClientNumber(TagClientRate, "", netip.MustParseAddr("192.0.2.1")); n != 2 {
		t.Errorf("default ClientRate = %d, want the later 2", n)
	}
	// The same key under another tag is no duplicate.
	w := m.Warnings()
	if len(w) != 4 {
		t.Fatalf("Warnings() = %q, want 4 duplicates", w)
	}
	for i, line := range []string{"access:2: duplicate key Connect:example.com (first on line 1)",
		"access:4: duplicate key Connect:10.0.0.0/8 (first on line 3)",
		"access:6: duplicate key Connect:2001:db8::/32 (first on line 5)",
		"access:8: duplicate key ClientRate: (first on line 7)"} {
		if !strings.HasPrefix(w[i], line) {
			t.Errorf("warning %d = %q, want %q...", i, w[i], line)
		}
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct{ text, want string }{
		{"AuthInfo:mail.example.com \"U:root\" \"P:secret\"\nauthinfo:other \"U:x\"\n",
			`access:1: tag AuthInfo: is not used by mxguard; its 2 entries are kept`},
		{"GreetPause:example.com 400000\n", "access:1: GreetPause:example.com: 400000 ms is more than the 5 minutes"},
		{"Connect:10.1.2.3/8 REJECT\n", "has host bits set; it means 10.0.0.0/8"},
		{"Connect:2001:db8::1 REJECT\n", "has no IPv6: prefix"},
		{"Connect:example.com \"550 go away\"\n", "a bare reply is deprecated by sendmail; write ERROR:550 go away"},
		{"To:user@ ERROR:5.2.2:450 full\n", "status 5.2.2 does not match reply code 450"},
		{"From: REJECT\n", "sendmail never looks up an empty key for envelope addresses"},
		{"From:192.0.2.1 REJECT\n", "a domain literal is written [192.0.2.1]"},
		{"Connect:user@example.com REJECT\n", "a key with @ never matches a client"},
		{"localhost RELAY\n", "access:1: untagged entry localhost (deprecated by sendmail)"},
	}
	for _, tt := range tests {
		w := mustParse(t, tt.text).Warnings()
		if len(w) != 1 || !strings.Contains(w[0], tt.want) {
			t.Errorf("Warnings(%q) = %q, want one containing %q", tt.text, w, tt.want)
		}
	}
}

func TestUnknownTagsKept(t *testing.T) {
	m := mustParse(t, "AuthInfo:mail.example.com \"U:root\" \"I:user\" \"P:secret\"\nTLS_Clt: VERIFY\nConnect:x OK\n")
	if m.Len() != 3 {
		t.Errorf("Len() = %d, want 3", m.Len())
	}
	if e, ok := m.LookupClient("authinfo", "mail.example.com", netip.Addr{}); !ok || e.Value != `"U:root" "I:user" "P:secret"` || e.Tag != "AuthInfo" {
		t.Errorf("AuthInfo lookup = %+v, %v", e, ok)
	}
	if e, ok := m.LookupClient("TLS_Clt", "any.example", netip.Addr{}); !ok || e.Value != "VERIFY" {
		t.Errorf("TLS_Clt default = %+v, %v", e, ok)
	}
}

func TestUntagged(t *testing.T) {
	m := mustParse(t, `
localhost              RELAY
127.0.0.1              RELAY
Connect:localhost      OK
a.example.com          REJECT
Connect:example.com    OK
spammer@aol.com        REJECT
IPv6:2001:db8::1       DISCARD
`)
	tests := []struct {
		tag, host, addr string
		line            int
	}{
		{TagConnect, "localhost", "", 4},             // tagged beats untagged on the same key
		{TagConnect, "", "127.0.0.1", 3},             // untagged when the tag has no such key
		{TagConnect, "a.example.com", "", 5},         // a more specific untagged key beats a tagged parent
		{TagConnect, "b.example.com", "", 6},         //
		{TagConnect, "", "2001:db8::1", 8},           // untagged IPv6: key
		{TagClientRate, "localhost", "127.0.0.1", 0}, // ClientRate: never falls back to untagged
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.addr != "" {
			a = netip.MustParseAddr(tt.addr)
		}
		e, ok := m.LookupClient(tt.tag, tt.host, a)
		if (tt.line == 0) == ok || (ok && e.Line != tt.line) {
			t.Errorf("LookupClient(%s, %q, %q) = %+v, %v; want line %d", tt.tag, tt.host, tt.addr, e, ok, tt.line)
		}
	}
	if e, ok := m.LookupAddress(TagFrom, "spammer@AOL.com"); !ok || e.Line != 7 || e.Tag != "" {
		t.Errorf("From: untagged = %+v, %v", e, ok)
	}
	if e, ok := m.LookupAddress(TagTo, "x@localhost"); !ok || e.Line != 2 {
		t.Errorf("To: untagged domain = %+v, %v", e, ok)
	}
	if _, ok := m.LookupAddress(TagSpam, "spammer@aol.com"); ok {
		t.Error("Spam: fell back to an untagged entry")
	}
	if m.Len() != 7 {
		t.Errorf("Len() = %d, want 7", m.Len())
	}
}

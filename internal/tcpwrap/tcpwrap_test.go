package tcpwrap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mustParse(t testing.TB, allow, deny string) *Table {
	t.Helper()
	tbl, err := Parse(strings.NewReader(allow), strings.NewReader(deny), "hosts.allow", "hosts.deny")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return tbl
}

func client(addr, name string) Client {
	c := Client{Name: name}
	if addr != "" {
		c.Addr = netip.MustParseAddr(addr)
	}
	return c
}

func paranoid(addr string) Client {
	c := client(addr, "")
	c.Paranoid = true
	return c
}

// TestPatterns puts each client pattern into hosts.deny twice: in a simple
// rule, which goes into the index, and behind a daemon-list EXCEPT, which
// is scanned; both must agree.
func TestPatterns(t *testing.T) {
	tests := []struct {
		pattern string
		c       Client
		match   bool
	}{
		// .domain suffix
		{".adsl.alicedsl.de", client("192.0.2.1", "host5.adsl.alicedsl.de"), true},
		{".adsl.alicedsl.de", client("192.0.2.1", "a.b.adsl.alicedsl.de"), true},
		{".adsl.alicedsl.de", client("192.0.2.1", "adsl.alicedsl.de"), false},
		{".adsl.alicedsl.de", client("192.0.2.1", "xadsl.alicedsl.de"), false},
		{".adsl.alicedsl.de", client("192.0.2.1", "host5.adsl.alicedsl.de.example"), false},
		{".ADSL.AliceDSL.de", client("192.0.2.1", "host5.adsl.alicedsl.de"), true},
		{".adsl.alicedsl.de", client("192.0.2.1", "HOST5.ADSL.ALICEDSL.DE."), true},
		{".de", client("192.0.2.1", "host5.adsl.alicedsl.de"), true},
		{".adsl.alicedsl.de", paranoid("192.0.2.1"), false},
		{".adsl.alicedsl.de", Client{Addr: netip.MustParseAddr("192.0.2.1"), Name: "h.adsl.alicedsl.de", Paranoid: true}, false},
		{".5", client("10.0.0.5", ""), false}, // tcpd would match the address text
		// exact host name
		{"mail.example.org", client("192.0.2.1", "mail.example.org"), true},
		{"Mail.Example.ORG", client("192.0.2.1", "mail.example.org"), true},
		{"mail.example.org", client("192.0.2.1", "x.mail.example.org"), false},
		{"mail.example.org", client("192.0.2.1", ""), false},
		// host name prefix
		{"mail.", client("192.0.2.1", "mail.example.org"), true},
		{"mail.", client("192.0.2.1", "smtp.mail.example.org"), false},
		// exact address
		{"192.0.2.1", client("192.0.2.1", ""), true},
		{"192.0.2.1", client("192.0.2.10", ""), false},
		{"192.0.2.1", client("::ffff:192.0.2.1", ""), true},
		// n.n.n. prefixes
		{"192.", client("192.0.2.1", ""), true},
		{"192.0.", client("192.0.2.1", ""), true},
		{"192.0.2.", client("192.0.2.1", ""), true},
		{"192.0.3.", client("192.0.2.1", ""), false},
		{"19.", client("192.0.2.1", ""), false},
		// net/mask and CIDR
		{"131.155.72.0/255.255.254.0", client("131.155.73.255", ""), true},
		{"131.155.72.0/255.255.254.0", client("131.155.74.0", ""), false},
		{"192.0.2.0/24", client("192.0.2.200", ""), true},
		{"192.0.2.0/25", client("192.0.2.200", ""), false},
		{"0.0.0.0/0", client("198.51.100.7", ""), true},
		{"0.0.0.0/0", client("2001:db8::1", ""), false},
		{"192.0.2.7/32", client("192.0.2.7", ""), true},
		// IPv6
		{"[2001:db8::]/32", client("2001:db8:1::1", ""), true},
		{"[2001:db8::]/32", client("2001:db9::1", ""), false},
		{"[2001:db8::1]", client("2001:db8::1", ""), true},
		{"[2001:DB8::1]", client("2001:db8::1", ""), true},
		{"[2001:db8::1]", client("2001:db8::2", ""), false},
		{"[::ffff:192.0.2.0]/120", client("192.0.2.9", ""), true},
		{"[::1]", client("::1", "localhost"), true},
		// wildcards
		{"*.example.org", client("192.0.2.1", "mx1.example.org"), true},
		{"*.example.org", client("192.0.2.1", "example.org"), false},
		{"mx?.example.org", client("192.0.2.1", "mx1.example.org"), true},
		{"mx?.example.org", client("192.0.2.1", "mx10.example.org"), false},
		{"192.0.2.*", client("192.0.2.77", ""), true},
		{"192.0.2.?", client("192.0.2.77", ""), false},
		{"*.example.org", paranoid("192.0.2.1"), false},
		// wildcard names
		{"ALL", client("192.0.2.1", ""), true},
		{"all", paranoid("192.0.2.1"), true},
		{"LOCAL", client("127.0.0.1", "localhost"), true},
		{"LOCAL", client("192.0.2.1", "mail.example.org"), false},
		{"LOCAL", client("192.0.2.1", ""), false},
		{"KNOWN", client("192.0.2.1", "mail.example.org"), true},
		{"KNOWN", client("192.0.2.1", ""), false},
		{"KNOWN", client("", "mail.example.org"), false},
		{"KNOWN", paranoid("192.0.2.1"), false},
		{"UNKNOWN", client("192.0.2.1", ""), true},
		{"UNKNOWN", client("", "mail.example.org"), true},
		{"UNKNOWN", client("192.0.2.1", "mail.example.org"), false},
		{"UNKNOWN", paranoid("192.0.2.1"), false},
		{"PARANOID", paranoid("192.0.2.1"), true},
		{"PARANOID", client("192.0.2.1", ""), false},
		{"PARANOID", client("192.0.2.1", "mail.example.org"), false},
		// unsupported: never match
		{"@mailers", client("192.0.2.1", "mail.example.org"), false},
		{"root@mail.example.org", client("192.0.2.1", "mail.example.org"), false},
		{"/etc/mailers", client("192.0.2.1", "mail.example.org"), false},
	}
	for _, tt := range tests {
		for _, form := range []string{"mxguard: %s\n", "mxguard EXCEPT other: %s\n"} {
			deny := fmt.Sprintf(form, tt.pattern)
			t.Run(deny, func(t *testing.T) {
				tbl := mustParse(t, "", deny)
				v := tbl.Check(Daemon, tt.c)
				if v.Allowed == tt.match {
					t.Errorf("Check(%+v) = %+v, want match %v", tt.c, v, tt.match)
				}
				if tt.match && (v.File != "hosts.deny" || v.Line != 1 || v.Pattern != tt.pattern) {
					t.Errorf("Check(%+v) = %+v, want hosts.deny:1 %q", tt.c, v, tt.pattern)
				}
			})
		}
	}
}

func TestDaemonList(t *testing.T) {
	c := client("192.0.2.1", "host.example.net")
	tests := []struct {
		daemons string
		daemon  string
		match   bool
	}{
		{"mxguard", Daemon, true},
		{"sendmail", Daemon, true},
		{"SendMail", Daemon, true},
		{"mxguard", "sendmail", true},
		{"ALL", Daemon, true},
		{"sshd", Daemon, false},
		{"sshd", "sshd", true},
		{"sshd, sendmail", Daemon, true},
		{"sshd sendmail mxguard", Daemon, true},
		{"mx*", Daemon, true},
		{"mx?uard", Daemon, true},
		{"ss*", Daemon, false},
		{"mxguard@192.0.2.25", Daemon, false},
		{"ALL EXCEPT sendmail", Daemon, false},
		{"ALL EXCEPT sshd", Daemon, true},
		{"ALL EXCEPT ALL EXCEPT mxguard", Daemon, true},
		{"ALL EXCEPT ALL EXCEPT sshd", Daemon, false},
	}
	for _, tt := range tests {
		t.Run(tt.daemons+"/"+tt.daemon, func(t *testing.T) {
			tbl := mustParse(t, "", tt.daemons+": .example.net\n")
			if v := tbl.Check(tt.daemon, c); v.Allowed == tt.match {
				t.Errorf("Check(%q) = %+v, want match %v", tt.daemon, v, tt.match)
			}
		})
	}
}

func TestExcept(t *testing.T) {
	mail := client("192.0.2.1", "mail.example.org")
	dyn := client("192.0.2.2", "dyn1.pool.example.org")
	dynOK := client("192.0.2.3", "ok.pool.example.org")
	other := client("198.51.100.1", "mx.example.net")
	tests := []struct {
		clients string
		c       Client
		match   bool
	}{
		{".example.org EXCEPT mail.example.org", mail, false},
		{".example.org EXCEPT mail.example.org", dyn, true},
		{".example.org EXCEPT mail.example.org", other, false},
		{".example.org, .example.net EXCEPT mail.example.org", other, true},
		// Nested: list1 EXCEPT (list2 EXCEPT list3).
		{"ALL EXCEPT .example.org EXCEPT .pool.example.org", mail, false},
		{"ALL EXCEPT .example.org EXCEPT .pool.example.org", dyn, true},
		{"ALL EXCEPT .example.org EXCEPT .pool.example.org", other, true},
		{"ALL EXCEPT .example.org EXCEPT .pool.example.org EXCEPT ok.pool.example.org", dynOK, false},
		{"ALL EXCEPT .example.org EXCEPT .pool.example.org EXCEPT ok.pool.example.org", dyn, true},
		{"all except 192.0.2.0/24", other, true},
		{"all except 192.0.2.0/24", mail, false},
		{"UNKNOWN EXCEPT 192.0.2.", client("192.0.2.9", ""), false},
		{"UNKNOWN EXCEPT 192.0.2.", client("203.0.113.9", ""), true},
	}
	for _, tt := range tests {
		t.Run(tt.clients+"/"+tt.c.Name, func(t *testing.T) {
			tbl := mustParse(t, "", "ALL: "+tt.clients+"\n")
			if v := tbl.Check(Daemon, tt.c); v.Allowed == tt.match {
				t.Errorf("Check(%+v) = %+v, want match %v", tt.c, v, tt.match)
			}
		})
	}
}

func TestAllowBeforeDeny(t *testing.T) {
	tbl := mustParse(t, "mxguard: 127.0.0.1\n", "ALL: ALL\n")
	tests := []struct {
		c    Client
		want Verdict
	}{
		{client("127.0.0.1", "localhost"), Verdict{Allowed: true, File: "hosts.allow", Line: 1, Pattern: "127.0.0.1"}},
		{client("127.0.0.2", "localhost"), Verdict{Allowed: false, File: "hosts.deny", Line: 1, Pattern: "ALL"}},
		{client("192.0.2.1", "mail.example.org"), Verdict{Allowed: false, File: "hosts.deny", Line: 1, Pattern: "ALL"}},
		{paranoid("192.0.2.1"), Verdict{Allowed: false, File: "hosts.deny", Line: 1, Pattern: "ALL"}},
	}
	for _, tt := range tests {
		if got := tbl.Check(Daemon, tt.c); got != tt.want {
			t.Errorf("Check(%+v) = %+v, want %+v", tt.c, got, tt.want)
		}
	}
	// Another daemon is not in hosts.allow and so is denied even from 127.0.0.1.
	if got := tbl.Check("sshd", client("127.0.0.1", "localhost")); got.Allowed {
		t.Errorf("Check(sshd, 127.0.0.1) = %+v, want denied", got)
	}
}

func TestNoRules(t *testing.T) {
	var nilTable *Table
	empty, err := Parse(nil, nil, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for name, tbl := range map[string]*Table{"nil": nilTable, "empty": empty} {
		if got := tbl.Check(Daemon, client("192.0.2.1", "")); got != (Verdict{Allowed: true}) {
			t.Errorf("%s: Check = %+v, want default allow", name, got)
		}
		if tbl.Len() != 0 || len(tbl.Warnings()) != 0 {
			t.Errorf("%s: Len %d, Warnings %q", name, tbl.Len(), tbl.Warnings())
		}
	}
}

func TestSeedHostsDeny(t *testing.T) {
	tbl, err := Load("", filepath.Join("testdata", "hosts.deny"))
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Len() != 47 {
		t.Errorf("Len = %d, want 47", tbl.Len())
	}
	if w := tbl.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q", w)
	}
	deny := filepath.Join("testdata", "hosts.deny")
	tests := []struct {
		daemon string
		c      Client
		want   Verdict
	}{
		{Daemon, client("192.0.2.5", "host5.adsl.alicedsl.de"), Verdict{File: deny, Line: 1, Pattern: ".adsl.alicedsl.de"}},
		{"sendmail", client("192.0.2.5", "host5.adsl.alicedsl.de"), Verdict{File: deny, Line: 1, Pattern: ".adsl.alicedsl.de"}},
		{Daemon, client("192.0.2.6", "p1234.dynamic.orange.es"), Verdict{File: deny, Line: 42, Pattern: ".dynamic.orange.es"}},
		{Daemon, client("192.0.2.7", "cpe-1-2-3-4.wi.res.rr.com"), Verdict{File: deny, Line: 39, Pattern: ".wi.res.rr.com"}},
		{Daemon, client("192.0.2.8", "x.y.bk21-dsl.surnet.cl"), Verdict{File: deny, Line: 47, Pattern: ".bk21-dsl.surnet.cl"}},
		// .vsnl.net.in (line 17) also covers line 15's .bb-static.vsnl.net.in;
		// the first rule in the file is reported.
		{Daemon, client("192.0.2.9", "a.bb-static.vsnl.net.in"), Verdict{File: deny, Line: 15, Pattern: ".bb-static.vsnl.net.in"}},
		{Daemon, client("192.0.2.9", "a.other.vsnl.net.in"), Verdict{File: deny, Line: 17, Pattern: ".vsnl.net.in"}},
		{Daemon, client("192.0.2.10", "mail.example.org"), Verdict{Allowed: true}},
		{Daemon, client("192.0.2.11", "adsl.alicedsl.de"), Verdict{Allowed: true}},
		{Daemon, client("192.0.2.12", ""), Verdict{Allowed: true}},
		{Daemon, paranoid("192.0.2.13"), Verdict{Allowed: true}},
		{"sshd", client("192.0.2.5", "host5.adsl.alicedsl.de"), Verdict{Allowed: true}},
	}
	for _, tt := range tests {
		if got := tbl.Check(tt.daemon, tt.c); got != tt.want {
			t.Errorf("Check(%q, %+v) = %+v, want %+v", tt.daemon, tt.c, got, tt.want)
		}
	}
}

// TestSeedVariants checks the seed's lines under each daemon list form,
// with the PARANOID and UNKNOWN rules an admin adds next to them.
func TestSeedVariants(t *testing.T) {
	seed, err := os.ReadFile(filepath.Join("testdata", "hosts.deny"))
	if err != nil {
		t.Fatal(err)
	}
	spammer := client("192.0.2.5", "host5.adsl.alicedsl.de")
	good := client("192.0.2.10", "mail.example.org")
	for _, d := range []string{"sendmail:", "mxguard:", "ALL:"} {
		t.Run(d, func(t *testing.T) {
			deny := strings.ReplaceAll(string(seed), "sendmail:", d) + d + " PARANOID\n" + d + " UNKNOWN\n"
			tbl := mustParse(t, "", deny)
			tests := []struct {
				c        Client
				allowed  bool
				line     int
				matching string
			}{
				{spammer, false, 1, ".adsl.alicedsl.de"},
				{good, true, 0, ""},
				{paranoid("192.0.2.13"), false, 48, "PARANOID"},
				{client("192.0.2.12", ""), false, 49, "UNKNOWN"},
			}
			for _, tt := range tests {
				v := tbl.Check(Daemon, tt.c)
				if v.Allowed != tt.allowed || v.Line != tt.line || v.Pattern != tt.matching {
					t.Errorf("Check(%+v) = %+v, want allowed %v at line %d by %q", tt.c, v, tt.allowed, tt.line, tt.matching)
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name        string
		allow, deny string
		c           Client
		want        Verdict
		warnings    int
	}{
		{
			name: "single file with ALLOW and DENY",
			deny: "mxguard: 127.0.0.1 : ALLOW\nmxguard: ALL : DENY\n",
			c:    client("127.0.0.1", "localhost"),
			want: Verdict{Allowed: true, File: "hosts.deny", Line: 1, Pattern: "127.0.0.1"},
		},
		{
			name: "single file denies the rest",
			allow: "mxguard: 127.0.0.1 : allow\n" +
				"mxguard: ALL : deny\n",
			c:    client("192.0.2.1", "mail.example.org"),
			want: Verdict{Allowed: false, File: "hosts.allow", Line: 2, Pattern: "ALL"},
		},
		{
			name:  "deny in hosts.allow stops the search",
			allow: "ALL: .example.org : deny\nALL: mail.example.org\n",
			c:     client("192.0.2.1", "mail.example.org"),
			want:  Verdict{Allowed: false, File: "hosts.allow", Line: 1, Pattern: ".example.org"},
		},
		{
			name:     "other options are ignored with a warning",
			deny:     "ALL: .example.org : spawn (/usr/bin/logger %h) & : severity mail.info : deny\n",
			c:        client("192.0.2.1", "mail.example.org"),
			want:     Verdict{Allowed: false, File: "hosts.deny", Line: 1, Pattern: ".example.org"},
			warnings: 2,
		},
		{
			name:     "escaped colon stays in its option",
			deny:     "ALL: .example.org : twist /bin/echo 550 go away\\: spam : allow\n",
			c:        client("192.0.2.1", "mail.example.org"),
			want:     Verdict{Allowed: true, File: "hosts.deny", Line: 1, Pattern: ".example.org"},
			warnings: 1,
		},
		{
			name: "empty option fields",
			deny: "ALL: .example.org : : allow :\n",
			c:    client("192.0.2.1", "mail.example.org"),
			want: Verdict{Allowed: true, File: "hosts.deny", Line: 1, Pattern: ".example.org"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl := mustParse(t, tt.allow, tt.deny)
			if got := tbl.Check(Daemon, tt.c); got != tt.want {
				t.Errorf("Check = %+v, want %+v", got, tt.want)
			}
			if w := tbl.Warnings(); len(w) != tt.warnings {
				t.Errorf("Warnings = %q, want %d", w, tt.warnings)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	deny := `mxguard: @mailers
mxguard@192.0.2.25: ALL
mxguard: root@mail.example.org, /etc/mailers
mxguard: .*.example.org, mx*.
ALL: ALL: spawn /bin/true
`
	tbl := mustParse(t, "", deny)
	want := []string{
		`hosts.deny:1: NIS netgroup "@mailers"`,
		`hosts.deny:2: daemon@host pattern "mxguard@192.0.2.25"`,
		`hosts.deny:3: user@host pattern "root@mail.example.org"`,
		`hosts.deny:3: pattern file "/etc/mailers"`,
		`hosts.deny:4: wildcards in domain pattern ".*.example.org"`,
		`hosts.deny:4: wildcards in prefix pattern "mx*."`,
		`hosts.deny:5: option "spawn" is ignored`,
	}
	got := tbl.Warnings()
	if len(got) != len(want) {
		t.Fatalf("Warnings = %q, want %d", got, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("warning %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	// Warnings returns a copy.
	got[0] = "changed"
	if tbl.Warnings()[0] == "changed" {
		t.Error("Warnings exposes the table's slice")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		deny string
		want []string
	}{
		{"sendmail .adsl.alicedsl.de\n", []string{"hosts.deny:1: missing ':'"}},
		{": ALL\n", []string{"hosts.deny:1: empty daemon list"}},
		{"ALL:\n", []string{"hosts.deny:1: empty client list"}},
		{"ALL: , ,\n", []string{"hosts.deny:1: empty client list"}},
		{"ALL: EXCEPT .example.org\n", []string{"hosts.deny:1: EXCEPT without a client pattern before"}},
		{"ALL: .example.org EXCEPT\n", []string{"hosts.deny:1: EXCEPT without a client pattern after"}},
		{"ALL EXCEPT: ALL\n", []string{"hosts.deny:1: EXCEPT without a daemon pattern after"}},
		{"ALL: .\n", []string{`hosts.deny:1: domain pattern "."`}},
		{"ALL: 192.0.2.0/33\n", []string{`hosts.deny:1: bad net/mask pattern "192.0.2.0/33"`}},
		{"ALL: 192.0.2.0/-1\n", []string{`bad net/mask`}},
		{"ALL: 192.0.2.0/255.0.255.0\n", []string{`not contiguous`}},
		{"ALL: 192.0.2.1/24\n", []string{`did you mean 192.0.2.0/24?`}},
		{"ALL: 192.0.2.0/255.255.255.256\n", []string{`bad net/mask`}},
		{"ALL: mail.example.org/24\n", []string{`bad net/mask`}},
		{"ALL: [2001:db8::/32\n", []string{`bad IPv6 pattern`}},
		{"ALL: [2001:db8::]/129\n", []string{`bad IPv6 pattern`}},
		{"ALL: [2001:db8::1]/32\n", []string{`did you mean 2001:db8::/32?`}},
		{"ALL: [2001:db8::]x\n", []string{`unexpected "x"`}},
		{"ALL: [fe80::1%eth0]\n", []string{`zones`}},
		{"ALL: [192.0.2.300]\n", []string{`bad IPv6 pattern`}},
		{"ALL: 192.0.2.256\n", []string{`bad address "192.0.2.256"`}},
		{"ALL: 10.1\n", []string{`bad address "10.1"`}},
		{"ALL: 192.0.2.1.\n", []string{`more than three fields`}},
		{"ALL: 192.256.\n", []string{`more than 255`}},
		{"ALL: 010.\n", []string{`not a decimal number`}},
		{"ALL: 10..\n", []string{`not a decimal number`}},
		{"ALL: ALL: allow: spawn /bin/true\n", []string{`"allow" must be the last option`}},
		{"ALL: ALL: deny yes\n", []string{`"deny" takes no value`}},
		{
			"ALL: 192.0.2.0/33\n# fine\nsendmail: .ok.example\nnothing here\nALL: ALL EXCEPT\n",
			[]string{"hosts.deny:1: ", "hosts.deny:4: missing ':'", "hosts.deny:5: EXCEPT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.deny, func(t *testing.T) {
			tbl, err := Parse(nil, strings.NewReader(tt.deny), "", "")
			if err == nil {
				t.Fatalf("Parse succeeded with %d rules, want errors %q", tbl.Len(), tt.want)
			}
			msg := err.Error()
			lines := strings.Split(msg, "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("got %d errors, want %d:\n%s", len(lines), len(tt.want), msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "hosts.deny" || pe.Line < 1 {
				t.Errorf("error %v is not a *ParseError naming hosts.deny", err)
			}
		})
	}
}

func TestErrorsInBothFiles(t *testing.T) {
	_, err := Parse(strings.NewReader("bogus\n"), strings.NewReader("\n\nALL: 1.2.3.4/99\n"), "/etc/hosts.allow", "/etc/hosts.deny")
	if err == nil {
		t.Fatal("Parse succeeded, want errors")
	}
	for _, w := range []string{"/etc/hosts.allow:1: missing ':'", "/etc/hosts.deny:3: bad net/mask"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestLineSyntax(t *testing.T) {
	deny := "# comment: with colon\n" +
		"   # indented comment\n" +
		"\n" +
		"   \t\n" +
		"sendmail: .one.example, \\\n" + // continuation: line 5
		"   .two.example\n" +
		"# a comment continued \\\n" +
		"mxguard: .hidden.example\n" +
		"mxguard:.three.example\\\n" + // joined with nothing in between, as tcpd does
		".four.example\n" +
		"mxguard ,\tsendmail :\t.five.example\t,.six.example\r\n" +
		"ALL: [2001:db8::]/32, [::1] : deny\n" +
		"ALL: .last.example\\"
	tbl := mustParse(t, "", deny)
	if tbl.Len() != 5 {
		t.Errorf("Len = %d, want 5", tbl.Len())
	}
	tests := []struct {
		c    Client
		line int
	}{
		{client("192.0.2.1", "a.one.example"), 5},
		{client("192.0.2.1", "a.two.example"), 5},
		{client("192.0.2.1", "a.hidden.example"), 0},
		{client("192.0.2.1", "a.three.example"), 0},
		{client("192.0.2.1", "a.three.example.four.example"), 9},
		{client("192.0.2.1", "a.five.example"), 11},
		{client("192.0.2.1", "a.six.example"), 11},
		{client("2001:db8::25", ""), 12},
		{client("::1", ""), 12},
		{client("192.0.2.1", "a.last.example"), 13},
	}
	for _, tt := range tests {
		v := tbl.Check(Daemon, tt.c)
		if v.Line != tt.line || v.Allowed != (tt.line == 0) {
			t.Errorf("Check(%+v) = %+v, want line %d", tt.c, v, tt.line)
		}
	}
}

// TestFirstRuleReported checks that the earliest matching rule wins across
// the index's maps and the scanned rules, which matters for its option.
func TestFirstRuleReported(t *testing.T) {
	deny := "mxguard: .example.org\n" + // 1
		"ALL: 192.0.2.0/24 : allow\n" + // 2
		"mxguard: mail.example.org\n" + // 3
		"ALL EXCEPT sshd: [2001:db8::]/32 : allow\n" + // 4
		"mxguard: mx?.example.net : allow\n" + // 5
		"mxguard: 198.51.100.\n" + // 6
		"ALL: KNOWN\n" + // 7
		"mxguard: .example.com EXCEPT ok.example.com : allow\n" + // 8
		"mxguard: .example.com\n" + // 9
		"sendmail: 203.0.113.0/24\n" + // 10
		"ALL: 203.0.113.0/255.255.255.0 : allow\n" + // 11
		"mxguard: 203.0.113.7 : allow\n" // 12
	tbl := mustParse(t, "", deny)
	tests := []struct {
		c       Client
		line    int
		allowed bool
	}{
		{client("192.0.2.1", "mail.example.org"), 1, false},
		{client("192.0.2.1", "mail.example.net"), 2, true},
		{client("198.51.100.1", "mail.example.org"), 1, false},
		{client("2001:db8::1", "mail.example.org"), 1, false},
		{client("2001:db8::1", ""), 4, true},
		{client("198.51.100.1", ""), 6, false},
		{client("198.51.100.1", "mx1.example.net"), 5, true},
		{client("198.51.100.1", "x.example.net"), 6, false},
		{client("203.0.113.1", "x.example.net"), 7, false},
		{client("203.0.113.1", "x.example.com"), 7, false},
		{client("203.0.113.1", ""), 10, false},
		{client("203.0.113.7", ""), 10, false},
	}
	for _, tt := range tests {
		v := tbl.Check(Daemon, tt.c)
		if v.Line != tt.line || v.Allowed != tt.allowed {
			t.Errorf("Check(%+v) = %+v, want line %d allowed %v", tt.c, v, tt.line, tt.allowed)
		}
		if ref := referenceCheck(tbl, Daemon, tt.c); ref != v {
			t.Errorf("Check(%+v) = %+v, reference %+v", tt.c, v, ref)
		}
	}
	// A scanned EXCEPT rule that comes first beats an indexed one.
	tbl = mustParse(t, "", "mxguard: .example.com EXCEPT ok.example.com : allow\nmxguard: .example.com\n")
	if v := tbl.Check(Daemon, client("192.0.2.1", "a.example.com")); v.Line != 1 || !v.Allowed {
		t.Errorf("Check = %+v, want line 1 allowed", v)
	}
	if v := tbl.Check(Daemon, client("192.0.2.1", "ok.example.com")); v.Line != 2 || v.Allowed {
		t.Errorf("Check = %+v, want line 2 denied", v)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	allow := filepath.Join(dir, "hosts.allow")
	deny := filepath.Join(dir, "hosts.deny")
	if err := os.WriteFile(allow, []byte("mxguard: 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(deny, []byte("ALL: ALL\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tbl, err := Load(allow, deny)
	if err != nil {
		t.Fatal(err)
	}
	if v := tbl.Check(Daemon, client("127.0.0.1", "")); !v.Allowed || v.File != allow {
		t.Errorf("Check(127.0.0.1) = %+v, want allowed by %s", v, allow)
	}
	if v := tbl.Check(Daemon, client("192.0.2.1", "")); v.Allowed || v.File != deny {
		t.Errorf("Check(192.0.2.1) = %+v, want denied by %s", v, deny)
	}
	if _, err := Load(filepath.Join(dir, "missing"), deny); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want not-exist", err)
	}
	tbl, err = Load("", "")
	if err != nil || tbl.Len() != 0 {
		t.Errorf("Load(\"\", \"\") = %d rules, %v", tbl.Len(), err)
	}
}

func TestLongLine(t *testing.T) {
	long := "ALL: " + strings.Repeat(".x", maxLine) + "\n"
	if _, err := Parse(nil, strings.NewReader(long), "", ""); err == nil || !strings.Contains(err.Error(), "hosts.deny:1: line too long") {
		t.Errorf("Parse(long line) error = %v", err)
	}
	cont := "ALL: " + strings.Repeat(".x.example \\\n", maxLine/10) + "\n"
	if _, err := Parse(nil, strings.NewReader(cont), "", ""); err == nil || !strings.Contains(err.Error(), "hosts.deny:1: line too long") {
		t.Errorf("Parse(long continued line) error = %v", err)
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pat, s string
		want   bool
	}{
		{"", "", true},
		{"*", "", true},
		{"*", "abc", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbbd", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*.example.org", "a.b.example.org", true},
		{"**a", "bba", true},
		{"*a*a*a*a*b", strings.Repeat("a", 100), false},
	}
	for _, tt := range tests {
		if got := glob(tt.pat, tt.s); got != tt.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tt.pat, tt.s, got, tt.want)
		}
		if got := glob(tt.pat, []byte(tt.s)); got != tt.want {
			t.Errorf("glob(%q, []byte(%q)) = %v, want %v", tt.pat, tt.s, got, tt.want)
		}
	}
}

func TestConcurrentCheck(t *testing.T) {
	tbl, err := Load("", filepath.Join("testdata", "hosts.deny"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 1000 {
				c := client("192.0.2.1", fmt.Sprintf("h%d.adsl.alicedsl.de", i*1000+j))
				if v := tbl.Check(Daemon, c); v.Allowed || v.Line != 1 {
					t.Errorf("Check(%+v) = %+v", c, v)
					return
				}
			}
		})
	}
	wg.Wait()
}

// referenceCheck is hosts_access(5) done the slow way, rule by rule, for
// comparison with the index.
func referenceCheck(t *Table, daemon string, c Client) Verdict {
	cv := newClientView(c)
	d := canonicalDaemon(daemon)
	for i := range t.files {
		f := &t.files[i]
		for _, r := range f.rules {
			if !matchDaemons(r.daemons, d) {
				continue
			}
			if pat, ok := matchClients(r.clients, &cv); ok {
				return Verdict{Allowed: r.allow, File: f.name, Line: r.line, Pattern: pat}
			}
		}
	}
	return Verdict{Allowed: true}
}

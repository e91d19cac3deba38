package policy

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/recipients"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/smtpd"
)

const testAccess = `From:spammer@spam.example   REJECT
From:angry.example          ERROR:5.7.1:550 Mail from angry.example refused
From:bulk@mass.example      DISCARD
To:closed@example.org       REJECT
To:full@example.org         ERROR:4.2.2:452 Mailbox full
To:trash@example.org        DISCARD
To:partner.example          RELAY
Spam:friend@example.org     FRIEND
`

// answers is the downstream's word on the addresses a test probes.
type answers map[string]Verification

func (a answers) Verify(_ context.Context, addr string) Verification {
	if v, ok := a[addr]; ok {
		return v
	}
	return Verification{Status: Unverified, Detail: "no answer"}
}

func testPolicy(t *testing.T) *Policy {
	t.Helper()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m, err := accessmap.Parse(strings.NewReader(testAccess), "access")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := recipients.Load(write("recipients", "alice@example.org\nclosed@example.org\nfull@example.org\ntrash@example.org\nfriend@example.org\n@catchall.example\n"),
		write("aliases", "team: alice, bob@partner.example\n"), []string{"example.org", "catchall.example", "probe.example"}, true)
	if err != nil {
		t.Fatal(err)
	}
	return &Policy{
		LocalDomains: []string{"example.org", "catchall.example", "probe.example"},
		Access:       m,
		Relay:        true,
		Recipients:   rc,
	}
}

func path(t *testing.T, s string) smtpd.Path {
	t.Helper()
	p, _, err := smtpd.ParsePathArg("<"+s+">", true, true)
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return p
}

var (
	stranger  = Client{Addr: netip.MustParseAddr("192.0.2.7")}
	trusted   = Client{Addr: netip.MustParseAddr("127.0.0.1"), Host: "localhost", Trusted: true}
	relayer   = Client{Addr: netip.MustParseAddr("198.51.100.25"), Relay: true}
	dnsListed = Client{Addr: netip.MustParseAddr("192.0.2.8"), Lists: "zen.example (127.0.0.2)",
		Listed: &reply.Reply{Code: 550, Status: "5.7.1", Text: "Service unavailable; client [192.0.2.8] blocked using DNS blocklists"}}
)

// TestRcpt: the recipient decisions, one row each, from a fresh
// transaction of a sender nobody refuses.
func TestRcpt(t *testing.T) {
	tests := []struct {
		name    string
		pol     func(*Policy)
		client  Client
		to      string
		code    int // 0: accepted
		reason  reason.Reason
		text    string // substring of the reply
		deliver []string
		discard bool
	}{
		{name: "listed", to: "alice@example.org", deliver: []string{"alice@example.org"}},
		{name: "listed, any case", to: "ALICE@Example.ORG", deliver: []string{"ALICE@example.org"}},
		{name: "unknown user", to: "nobody@example.org", code: 550, reason: reason.UnknownUser, text: "5.1.1 <nobody@example.org>: Recipient address rejected: User unknown"},
		{name: "unknown, from a trusted client too", client: trusted, to: "nobody@example.org", code: 550, reason: reason.UnknownUser},
		{name: "catch-all domain", to: "anyone@catchall.example", deliver: []string{"anyone@catchall.example"}},
		{name: "alias", to: "Team@example.org", deliver: []string{"alice@example.org", "bob@partner.example"}},
		{name: "bare postmaster", to: "Postmaster", deliver: []string{"postmaster@example.org"}},
		{name: "postmaster of each domain", to: "postmaster@probe.example", deliver: []string{"postmaster@probe.example"}},
		{name: "quoted local part keeps its quotes", pol: func(p *Policy) { p.CatchAll = true }, to: `"jane doe"@example.org`, deliver: []string{`"jane doe"@example.org`}},
		{name: "quotes kept as sent", to: `"alice"@example.org`, deliver: []string{`"alice"@example.org`}},
		{name: "the forged-sender trap", to: `"x>y"@example.org`, code: 550, reason: reason.UnknownUser},
		{name: "catch_all", pol: func(p *Policy) { p.CatchAll = true }, to: "nobody@example.org", deliver: []string{"nobody@example.org"}},
		{name: "foreign, untrusted", to: "x@elsewhere.example", code: 550, reason: reason.RelayDenied, text: "5.7.1 Relaying denied"},
		{name: "foreign, trusted", client: trusted, to: "x@elsewhere.example", deliver: []string{"x@elsewhere.example"}},
		{name: "foreign, trusted, no relay", client: trusted, pol: func(p *Policy) { p.Relay = false }, to: "x@elsewhere.example", code: 550, reason: reason.RelayDenied},
		{name: "foreign, Connect: RELAY", client: relayer, to: "x@elsewhere.example", deliver: []string{"x@elsewhere.example"}},
		{name: "foreign, To: RELAY", to: "x@partner.example", deliver: []string{"x@partner.example"}},
		{name: "percent hack, untrusted", to: "x%elsewhere.example@example.org", code: 550, reason: reason.RelayDenied},
		{name: "bang path, untrusted", to: "elsewhere!x@example.org", code: 550, reason: reason.RelayDenied},
		{name: "percent hack, trusted: still a local user", client: trusted, to: "x%elsewhere.example@example.org", code: 550, reason: reason.UnknownUser},
		{name: "To: REJECT", to: "closed@example.org", code: 550, reason: reason.Access, text: "5.2.1 Mailbox disabled for this recipient"},
		{name: "To: ERROR", to: "full@example.org", code: 452, reason: reason.Access, text: "4.2.2 Mailbox full"},
		{name: "To: DISCARD", to: "trash@example.org", deliver: []string{"trash@example.org"}, discard: true},
		{name: "mailbox name refused", pol: func(p *Policy) {
			p.Mailbox = func(addr string) error {
				if m, err := smtpd.ParseMailbox(addr); err != nil || strings.HasPrefix(m.Local, ".") {
					return os.ErrInvalid
				}
				return nil
			}
		}, to: `".hidden"@catchall.example`, code: 550, reason: reason.BadMailbox, text: "5.1.3"},
		{name: "probe: valid", pol: verify(answers{"v@probe.example": {Status: Valid}}), to: "v@probe.example", deliver: []string{"v@probe.example"}},
		{name: "probe: invalid", pol: verify(answers{"i@probe.example": {Status: Invalid, Detail: "550 5.1.1 no"}}), to: "i@probe.example", code: 550, reason: reason.UnknownUser},
		{name: "probe: unverified", pol: verify(answers{}), to: "u@probe.example", code: 450, reason: reason.Unverified, text: "4.1.1 <u@probe.example>: Recipient address rejected: unverified address"},
		{name: "probe: the file answers first", pol: verify(answers{}), to: "alice@example.org", deliver: []string{"alice@example.org"}},
		{name: "DNS-listed, reject_rcpt: a known user too", client: dnsListed, to: "alice@example.org", code: 550, reason: reason.DNSBLRcpt, text: "5.7.1 Service unavailable; client [192.0.2.8] blocked using DNS blocklists"},
		{name: "non-ASCII address not echoed", to: "øystein@example.org", code: 550, reason: reason.UnknownUser, text: "5.1.1 Recipient address rejected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy(t)
			if tt.pol != nil {
				tt.pol(p)
			}
			c := tt.client
			if !c.Addr.IsValid() {
				c = stranger
			}
			var tx Tx
			if v := p.Mail(&c, &tx, path(t, "sender@example.net")); !v.Accepted() {
				t.Fatalf("MAIL refused: %v", v.Reply)
			}
			v := p.Rcpt(context.Background(), &c, &tx, path(t, tt.to))
			switch {
			case tt.code == 0 && !v.Accepted():
				t.Fatalf("refused: %v (%s)", v.Reply, v.Reason)
			case tt.code != 0 && (v.Reply == nil || v.Reply.Code != tt.code):
				t.Fatalf("reply %v, want %d", v.Reply, tt.code)
			}
			if v.Reason != tt.reason {
				t.Errorf("reason %q, want %q", v.Reason, tt.reason)
			}
			if tt.text != "" && !strings.Contains(v.Reply.String(), tt.text) {
				t.Errorf("reply %q lacks %q", v.Reply, tt.text)
			}
			if tt.reason == reason.DNSBLRcpt && !strings.Contains(v.Log, "blocked using zen.example (127.0.0.2): RCPT from unknown [192.0.2.8] from=<sender@example.net> to=<alice@example.org>") {
				t.Errorf("the envelope is not logged: %q", v.Log)
			}
			if tt.code != 0 && (v.Log == "" || !strings.Contains(v.Log, c.Name())) {
				t.Errorf("refusal logged as %q: want a line naming the client", v.Log)
			}
			if !slices.Equal(v.Deliver, tt.deliver) {
				t.Errorf("deliver to %q, want %q", v.Deliver, tt.deliver)
			}
			if tx.Discard != tt.discard {
				t.Errorf("discard %v, want %v", tx.Discard, tt.discard)
			}
		})
	}
}

func verify(a answers) func(*Policy) { return func(p *Policy) { p.Verify = a } }

// TestMail: the sender decisions, and sendmail's delay_checks.
func TestMail(t *testing.T) {
	p := testPolicy(t)
	c := stranger
	for _, tt := range []struct {
		from, reply string
		discard     bool
	}{
		{"someone@example.net", "", false},
		{"", "", false},
		{"spammer@spam.example", "550 5.7.1 Access denied", false},
		{"x@angry.example", "550 5.7.1 Mail from angry.example refused", false},
		{"bulk@mass.example", "", true},
	} {
		var tx Tx
		v := p.Mail(&c, &tx, path(t, tt.from))
		got := ""
		if v.Reply != nil {
			got = v.Reply.String()
			if v.Reason != reason.Access || v.Key == "" || !strings.Contains(v.Log, "<"+tt.from+">") {
				t.Errorf("%s: reason %q key %q log %q", tt.from, v.Reason, v.Key, v.Log)
			}
		}
		if got != tt.reply || tx.Discard != tt.discard {
			t.Errorf("MAIL FROM:<%s> = %q discard %v, want %q %v", tt.from, got, tx.Discard, tt.reply, tt.discard)
		}
	}

	// delay_checks: the sender's refusal comes at RCPT, except for a
	// Spam: FRIEND recipient.
	p.DelayChecks = true
	var tx Tx
	if v := p.Mail(&c, &tx, path(t, "spammer@spam.example")); v.Reply != nil {
		t.Fatalf("delay_checks: MAIL refused at once: %v", v.Reply)
	}
	if v := p.Rcpt(context.Background(), &c, &tx, path(t, "alice@example.org")); v.Reply == nil || v.Reply.Code != 550 || v.Reason != reason.Access {
		t.Errorf("delay_checks: RCPT to alice = %v, want the sender's 550", v.Reply)
	}
	if v := p.Rcpt(context.Background(), &c, &tx, path(t, "friend@example.org")); !v.Accepted() {
		t.Errorf("delay_checks: RCPT to a FRIEND = %v, want it accepted", v.Reply)
	}
	// A new transaction forgets the held refusal.
	p.Mail(&c, &tx, path(t, "someone@example.net"))
	if v := p.Rcpt(context.Background(), &c, &tx, path(t, "alice@example.org")); !v.Accepted() {
		t.Errorf("after a new MAIL: %v", v.Reply)
	}

	// Connect: DISCARD makes every transaction of the session discard.
	d := Client{Addr: netip.MustParseAddr("198.51.100.66"), Discard: true}
	p.Mail(&d, &tx, path(t, "someone@example.net"))
	if !tx.Discard {
		t.Error("Connect: DISCARD client: transaction not discarded")
	}
}

package smtpd

import "testing"

func TestMailbox(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"<jane@example.org>", "jane@example.org"},
		{`<"jane"@example.org>`, `"jane"@example.org`},
		{`<"jane doe"@example.org>`, `"jane doe"@example.org`},
		{`<"x>y"@example.test>`, `"x>y"@example.test`},
		{`<"a\"b\\c"@example.test>`, `"a\"b\\c"@example.test`},
		{`<""@example.test>`, `""@example.test`},
		{`<".dot"@example.test>`, `".dot"@example.test`},
		{"<Postmaster>", "postmaster"},
		{"<>", ""},
		{"<user@[192.0.2.1]>", "user@[192.0.2.1]"},
	} {
		p, _, err := ParsePathArg(tt.in, true, true)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if got := p.Mailbox(); got != tt.want {
			t.Errorf("%s: Mailbox() = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// FuzzMailbox: whatever the server accepts, Mailbox writes in a form that
// parses back to the same address, so the relay client sends what RCPT
// accepted, byte for byte.
func FuzzMailbox(f *testing.F) {
	for _, s := range []string{"<a@b.c>", `<"x y"@b.c>`, `<"\"\\"@b>`, "<ü@ü.de>", `<""@x>`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		p, _, err := ParsePathArg(arg, true, false)
		if err != nil || p.IsNull() {
			return
		}
		m := p.Mailbox()
		q, err := ParseMailbox(m)
		if err != nil {
			t.Fatalf("%q: Mailbox() = %q does not parse: %v", arg, m, err)
		}
		if q.Local != p.Local || q.Domain != p.Domain || q.Quoted != p.Quoted {
			t.Fatalf("%q: Mailbox() = %q parses back as %+v, want %+v", arg, m, q, p)
		}
		if _, _, err := ParsePathArg("<"+m+">", true, false); err != nil {
			t.Fatalf("%q: <Mailbox()> = <%s> refused by the server: %v", arg, m, err)
		}
	})
}

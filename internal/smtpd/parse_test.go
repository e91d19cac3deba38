package smtpd

import (
	"testing"
)

func TestParsePathArg(t *testing.T) {
	tests := []struct {
		in         string
		utf8       bool
		local, dom string
		params     int
		err        error
	}{
		{"<a@b.example>", false, "a", "b.example", 0, nil},
		{" <a@b.example>", false, "a", "b.example", 0, nil},
		{"<>", false, "", "", 0, nil},
		{"<a@b.example> SIZE=10 BODY=8BITMIME", false, "a", "b.example", 2, nil},
		{"<@x.example,@y.example:a@b.example>", false, "a", "b.example", 0, nil},
		{`<"a b"@c.example>`, false, "a b", "c.example", 0, nil},
		{`<"a\"b"@c.example>`, false, `a"b`, "c.example", 0, nil},
		{`<"user@other"@local>`, false, "user@other", "local", 0, nil},
		{"<user%other@local>", false, "user%other", "local", 0, nil},
		{"<other!user@local>", false, "other!user", "local", 0, nil},
		{"<a@[127.0.0.1]>", false, "a", "[127.0.0.1]", 0, nil},
		{"<a@[IPv6:::1]>", false, "a", "[IPv6:::1]", 0, nil},
		{"<a@b.example.>", false, "", "", 0, ErrPathSyntax},
		{"<a@-b.example>", false, "", "", 0, ErrPathSyntax},
		{"<.a@b>", false, "", "", 0, ErrPathSyntax},
		{"<a@b", false, "", "", 0, ErrPathSyntax},
		{"a@b", false, "", "", 0, ErrPathSyntax},
		{"<a@b>x", false, "", "", 0, ErrParamSyntax},
		{"<a@b> =x", false, "", "", 0, ErrParamSyntax},
		{"<a@[1.2.3]>", false, "", "", 0, ErrPathSyntax},
		{"<@:a@b>", false, "", "", 0, ErrPathSyntax},
		{"<jö@b>", false, "", "", 0, ErrNonASCIIPath},
		{"<jö@bü.example>", true, "jö", "bü.example", 0, nil},
		{"<a\xff@b>", true, "", "", 0, ErrPathSyntax},
		{"<" + string(make([]byte, 300)) + ">", false, "", "", 0, ErrPathTooLong},
	}
	for _, tt := range tests {
		p, params, err := ParsePathArg(tt.in, tt.utf8, false)
		if err != tt.err {
			t.Errorf("ParsePathArg(%q) err = %v, want %v", tt.in, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if p.Local != tt.local || p.Domain != tt.dom || len(params) != tt.params {
			t.Errorf("ParsePathArg(%q) = %+v %v, want %s@%s with %d params", tt.in, p, params, tt.local, tt.dom, tt.params)
		}
	}
}

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in, verb, arg string
		ok            bool
	}{
		{"EHLO x", "EHLO", "x", true},
		{"mail FROM:<a@b>", "MAIL", "FROM:<a@b>", true},
		{"QUIT", "QUIT", "", true},
		{"", "", "", false},
		{" NOOP", "", "", false},
		{"N0OP", "", "", false},
		{"ABCDEFGHIJK x", "", "", false},
	}
	for _, tt := range tests {
		c, err := ParseCommand(tt.in)
		if (err == nil) != tt.ok || c.Verb != tt.verb || c.Arg != tt.arg {
			t.Errorf("ParseCommand(%q) = %+v, %v", tt.in, c, err)
		}
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"EHLO x", "MAIL FROM:<a@b> SIZE=1", "rcpt to:<\"x y\"@z>", "QUIT", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseCommand(line)
		if err != nil {
			return
		}
		if c.Verb == "" || len(c.Verb) > 10 {
			t.Fatalf("bad verb %q", c.Verb)
		}
	})
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"<a@b>", "<>", "<@x,@y:a@b> SIZE=1", `<"a\"b"@c>`, "<a@[IPv6:::1]>", "<Postmaster>"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, arg string, utf8ok bool) {
		p, _, err := ParsePathArg(arg, utf8ok, true)
		if err != nil {
			return
		}
		if !utf8ok && !isASCII(p.Local+p.Domain) {
			t.Fatalf("non-ASCII path accepted without SMTPUTF8: %q", arg)
		}
		if len(p.Local) > 64 || len(p.Domain) > 255 {
			t.Fatalf("over-long path accepted: %q", arg)
		}
		if p.Domain != "" && p.Domain[len(p.Domain)-1] == '.' {
			t.Fatalf("trailing dot accepted: %q", arg)
		}
	})
}

func BenchmarkParseCommand(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		c, err := ParseCommand("MAIL FROM:<someone@example.org> SIZE=1024")
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := ParsePathArg(c.Arg[5:], false, false); err != nil {
			b.Fatal(err)
		}
	}
}

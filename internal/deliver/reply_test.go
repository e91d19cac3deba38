package deliver

import (
	"bufio"
	"slices"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		in       string
		code     int
		lines    []string
		str      string
		enhanced string
		err      bool
	}{
		{in: "250 2.0.0 Ok\r\n", code: 250, lines: []string{"2.0.0 Ok"}, str: "250 2.0.0 Ok", enhanced: "2.0.0"},
		{in: "250-mx\r\n250-PIPELINING\r\n250 \r\n", code: 250, lines: []string{"mx", "PIPELINING", ""}, str: "250 mx PIPELINING"},
		{in: "220\r\n", code: 220, lines: []string{""}, str: "220"},
		{in: "550 5.1.1 bare LF\n", code: 550, lines: []string{"5.1.1 bare LF"}, str: "550 5.1.1 bare LF", enhanced: "5.1.1"},
		{in: "451 5.1.1 class mismatch\r\n", code: 451, lines: []string{"5.1.1 class mismatch"}, str: "451 5.1.1 class mismatch"},
		{in: "554-a\r\n554 b\r\nextra", code: 554, lines: []string{"a", "b"}, str: "554 a b"},
		{in: "250 ctl\x01 and \xff\r\n", code: 250, lines: []string{"ctl\x01 and \xff"}, str: "250 ctl? and ?"},
		{in: "250-a\r\n251 b\r\n", err: true},
		{in: "25\r\n", err: true},
		{in: "2500 x\r\n", err: true},
		{in: "650 x\r\n", err: true},
		{in: "abc x\r\n", err: true},
		{in: "250-unterminated\r\n", err: true},
		{in: "250 no newline", err: true},
		{in: "", err: true},
		{in: "250 " + strings.Repeat("x", 5000) + "\r\n", err: true},
		{in: strings.Repeat("250-x\r\n", 200) + "250 x\r\n", err: true},
	}
	for _, tt := range tests {
		rep, err := readReply(bufio.NewReader(strings.NewReader(tt.in)))
		if tt.err {
			if err == nil {
				t.Errorf("readReply(%.40q) = %+v, want an error", tt.in, rep)
			}
			continue
		}
		if err != nil {
			t.Errorf("readReply(%.40q): %v", tt.in, err)
			continue
		}
		if rep.code != tt.code || !slices.Equal(rep.lines, tt.lines) {
			t.Errorf("readReply(%.40q) = %d %q, want %d %q", tt.in, rep.code, rep.lines, tt.code, tt.lines)
		}
		if s := rep.String(); s != tt.str {
			t.Errorf("String() = %q, want %q", s, tt.str)
		}
		if e := rep.enhanced(); e != tt.enhanced {
			t.Errorf("enhanced() of %q = %q, want %q", tt.in, e, tt.enhanced)
		}
	}
}

func TestReplyStringLimit(t *testing.T) {
	rep := reply{code: 550, lines: []string{strings.Repeat("a", 800), strings.Repeat("b", 800)}}
	if s := rep.String(); len(s) != maxReplyText {
		t.Errorf("String() is %d long, want %d", len(s), maxReplyText)
	}
}

func TestExtensions(t *testing.T) {
	rep := reply{code: 250, lines: []string{"mx greets you", "pipelining", "SIZE 1000", "8BITMIME", "", "AUTH PLAIN LOGIN"}}
	ext := rep.extensions()
	want := map[string]string{"PIPELINING": "", "SIZE": "1000", "8BITMIME": "", "AUTH": "PLAIN LOGIN"}
	if len(ext) != len(want) {
		t.Fatalf("extensions = %q, want %q", ext, want)
	}
	for k, v := range want {
		if got, ok := ext[k]; !ok || got != v {
			t.Errorf("extension %s = %q (%v), want %q", k, got, ok, v)
		}
	}
}

// FuzzReadReply checks that any byte stream gives either an error or a
// reply that is well formed, fits the limits and renders safely.
func FuzzReadReply(f *testing.F) {
	f.Add("250 2.0.0 Ok\r\n")
	f.Add("250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n")
	f.Add("220\r\n")
	f.Add("250-a\r\n251 b\r\n")
	f.Add("550 5.1.1 x\n")
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReaderSize(strings.NewReader(in), 16)
		for range 4 {
			rep, err := readReply(br)
			if err != nil {
				return
			}
			if rep.code < 200 || rep.code > 599 || len(rep.lines) == 0 || len(rep.lines) > maxReplyLines {
				t.Fatalf("bad reply %+v from %q", rep, in)
			}
			for _, l := range rep.lines {
				if len(l) > maxReplyLine {
					t.Fatalf("line of %d octets accepted", len(l))
				}
			}
			s := rep.String()
			if len(s) > maxReplyText || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) {
				t.Fatalf("String() = %q: too long or unsafe", s)
			}
			if e := rep.enhanced(); e != "" && int(e[0]-'0') != rep.class() {
				t.Fatalf("enhanced code %q for reply %d", e, rep.code)
			}
			rep.extensions()
		}
	})
}

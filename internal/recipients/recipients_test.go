package recipients

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

func write(t testing.TB, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var domains = []string{"example.test", "example.net"}

func TestLookup(t *testing.T) {
	rcpts := write(t, "recipients", `# users of example.test
Alice@Example.TEST
bob@example.test   OK          # a Postfix map source line
@example.net
`)
	aliases := write(t, "aliases", `# sendmail aliases
postmaster: root
root: alice
sales: bob, carol@example.test,
	dave@elsewhere.test
alice-copy: \alice, archive@example.test
loop-a: loop-b
loop-b: loop-a, bob
"Quoted": alice
`)
	tb, err := Load(rcpts, aliases, domains, true)
	if err != nil {
		t.Fatal(err)
	}
	if w := tb.Warnings(); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
	tests := []struct {
		local, domain string
		match         Match
		targets       []Target
	}{
		{"alice", "example.test", Listed, nil},
		{"ALICE", "EXAMPLE.test", Listed, nil},
		{"bob", "example.test", Listed, nil},
		{"carol", "example.test", Unknown, nil},
		{"anyone", "example.net", CatchAll, nil},
		{"alice", "example.org", Unknown, nil},
		{"postmaster", "example.test", Alias, []Target{{"alice", "example.test"}}},
		{"Sales", "example.net", Alias, []Target{{"bob", "example.net"}, {"carol", "example.test"}, {"dave", "elsewhere.test"}}},
		{"alice-copy", "example.test", Alias, []Target{{"alice", "example.test"}, {"archive", "example.test"}}},
		{"loop-a", "example.test", Alias, []Target{{"loop-a", "example.test"}, {"bob", "example.test"}}},
		{"quoted", "example.test", Alias, []Target{{"alice", "example.test"}}},
		{strings.Repeat("x", 300), "example.test", Unknown, nil},
	}
	for _, tt := range tests {
		m, ts := tb.Lookup(tt.local, tt.domain)
		if m != tt.match || !reflect.DeepEqual(ts, tt.targets) {
			t.Errorf("Lookup(%q, %q) = %v %v, want %v %v", tt.local, tt.domain, m, ts, tt.match, tt.targets)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, rcpts, aliases string
		remote               bool
		want                 []string
	}{
		{"not an address", "alice\n", "", true, []string{"recipients:1: \"alice\" is not an address"}},
		{"bad domain", "\nbob@exa mple\nx@.bad\n", "", true, []string{"recipients:3: \"x@.bad\": invalid domain"}},
		{"no colon", "", "root alice\n", true, []string{"aliases:1: no ':' after the alias name"}},
		{"program", "", "a: |/usr/bin/x\nb: /var/mail/b\nc: :include:/etc/list\n", true, []string{
			"aliases:1: alias a: \"|/usr/bin/x\": mxguard delivers to mailboxes only",
			"aliases:2: alias b:", "aliases:3: alias c:"}},
		{"remote without relay", "", "a: x@far.test\n", false, []string{"aliases:1: alias a: x@far.test is not a local domain and no relay is configured"}},
		{"no target", "", "a: ,\n", true, []string{"aliases:1: alias a has no target"}},
		{"orphan continuation", "", "  x@example.test\n", true, []string{"aliases:1: continuation line with no alias before it"}},
		{"too deep", "", aliasChain(12), true, []string{"aliases:1: alias a0: more than 10 levels"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r, a string
			dir := t.TempDir()
			if tt.rcpts != "" {
				r = filepath.Join(dir, "recipients")
				os.WriteFile(r, []byte(tt.rcpts), 0o644)
			}
			if tt.aliases != "" {
				a = filepath.Join(dir, "aliases")
				os.WriteFile(a, []byte(tt.aliases), 0o644)
			}
			_, err := Load(r, a, domains, tt.remote)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func aliasChain(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "a%d: a%d\n", i, i+1)
	}
	return b.String()
}

func TestWarnings(t *testing.T) {
	tb, err := Load(write(t, "r", "a@other.test\n"), write(t, "a", "x: alice\nx: bob\n"), domains, true)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(tb.Warnings(), "\n")
	for _, w := range []string{"r:1: other.test is not in local_domains", "a:2: alias x is defined again (first on line 1)"} {
		if !strings.Contains(got, w) {
			t.Errorf("warnings lack %q:\n%s", w, got)
		}
	}
	if m, ts := tb.Lookup("x", "example.test"); m != Alias || len(ts) != 1 || ts[0].Local != "bob" {
		t.Errorf("the later alias does not win: %v %v", m, ts)
	}
}

func TestLookupAllocs(t *testing.T) {
	tb, err := Load(write(t, "r", "alice@example.test\n@example.net\n"), "", domains, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range [][2]string{{"Alice", "example.test"}, {"zed", "example.net"}, {"zed", "example.test"}} {
		if n := testing.AllocsPerRun(100, func() { tb.Lookup(a[0], a[1]) }); n != 0 {
			t.Errorf("Lookup(%q, %q): %v allocations", a[0], a[1], n)
		}
	}
}

// bigFile writes n addresses like user123456@example.test.
func bigFile(tb testing.TB, n int) string {
	var b strings.Builder
	b.Grow(n * 24)
	for i := range n {
		fmt.Fprintf(&b, "user%d@example.test\n", i)
	}
	return write(tb, "big", b.String())
}

// BenchmarkLookup1M: a lookup among 1,000,000 addresses, hit and miss.
// The load's heap cost is reported as MB-heap (live heap after load, GC'd).
func BenchmarkLookup1M(b *testing.B) {
	path := bigFile(b, 1_000_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb, err := Load(path, "", domains, false)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	for _, c := range []struct{ name, local string }{{"hit", "User777777"}, {"miss", "nobody777777"}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tb.Lookup(c.local, "example.test")
			}
			b.ReportMetric(heap, "MB-heap")
		})
	}
	runtime.KeepAlive(tb)
}

func BenchmarkLoad1M(b *testing.B) {
	path := bigFile(b, 1_000_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(path, "", domains, false); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParse: no input panics; every error names its line; every address a
// file lists is found again.
func FuzzParse(f *testing.F) {
	f.Add("alice@example.test\n@example.net\n# c\n", "root: alice\nsales: bob,\n\tx@example.test\n")
	f.Add("bad\nx@.y\n", "a: |prog\nb\n  c\nd: d, \\d\n")
	f.Add("Ünïcode@example.test\n", "\"q q\": a\nloop: loop2\nloop2: loop\n")
	f.Fuzz(func(t *testing.T, rcpts, aliases string) {
		local := map[string]bool{"example.test": true, "example.net": true}
		tb := &Table{users: map[string]struct{}{}, domains: map[string]struct{}{}, aliases: map[string][]Target{}}
		err := errors.Join(tb.parseRecipients([]byte(rcpts), "r", local), tb.parseAliases([]byte(aliases), "a", local, true))
		if err != nil {
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				for _, e := range flatten(e) {
					var le *LineError
					if !errors.As(e, &le) || le.Line < 1 {
						t.Fatalf("error %v names no line", e)
					}
				}
			}
			return
		}
		for key := range tb.users {
			at := strings.LastIndexByte(key, '@')
			l, d := key[:at], key[at+1:]
			upper := strings.Map(func(r rune) rune { // ASCII only, as lookups fold
				if 'a' <= r && r <= 'z' {
					return r - 'a' + 'A'
				}
				return r
			}, l)
			if !utf8.ValidString(l) {
				upper = l
			}
			if m, _ := tb.Lookup(upper, d); m == Unknown {
				t.Fatalf("listed %q not found", key)
			}
		}
		for name, ts := range tb.aliases {
			if len(ts) == 0 {
				t.Fatalf("alias %q expands to nothing", name)
			}
		}
	})
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

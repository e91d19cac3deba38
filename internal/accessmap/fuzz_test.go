package accessmap

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func addFileSeeds(f *testing.F) {
	f.Helper()
	seed, err := os.ReadFile(filepath.Join("testdata", "seed.access"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add(clientMap)
	f.Add(envelopeMap)
}

// FuzzParse checks that Parse never panics, that every error names a line,
// and that a parsed map written back out parses to the same entries, which
// the indexes then find as the reference lookup does.
func FuzzParse(f *testing.F) {
	addFileSeeds(f)
	f.Add("Connect:IPv6:2001:db8::/32 OK\nlocalhost RELAY\nAuthInfo:x \"U:y\"\n")
	f.Add("Connect:[IPv6:::1] OK\nConnect:::ffff:10.0.0.0/104 REJECT\n")
	f.Add("From:a+*@ OK\nSpam:b@c FRIEND\nTo:[1.2] ERROR:4.2.2:\"450 full\"\n")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := Parse(strings.NewReader(text), "fuzz")
		if err != nil {
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) {
				t.Fatalf("error %v is not a list", err)
			}
			for _, e := range joined.Unwrap() {
				var le *LineError
				if !errors.As(e, &le) && !strings.Contains(e.Error(), "more errors not shown") {
					t.Fatalf("error %q names no line", e)
				}
			}
			return
		}
		var out strings.Builder
		for e := range m.All() {
			if e.Key != refLower(e.Key) {
				t.Fatalf("key %q is not lower-case", e.Key)
			}
			fmt.Fprintf(&out, "%s %s\n", e, e.Value)
		}
		m2, err := Parse(strings.NewReader(out.String()), "fuzz2")
		if err != nil {
			t.Fatalf("written back map does not parse: %v\n%s", err, out.String())
		}
		sameButLine := func(a, b Entry) bool { a.Line, b.Line = 0, 0; return a == b }
		if !slices.EqualFunc(slices.Collect(m.All()), slices.Collect(m2.All()), sameButLine) {
			t.Fatalf("round trip changed the entries:\n%s", out.String())
		}
		for e := range m.All() {
			tag := e.Tag
			if tagIndex(tag) < 0 {
				tag = TagConnect
			}
			addr, _ := netip.ParseAddr(strings.Trim(e.Key, "[]"))
			checkAgainstReference(t, m, tag, e.Key, netip.Addr{}, e.Key)
			checkAgainstReference(t, m, tag, "", addr, "u@"+e.Key)
		}
	})
}

// FuzzLookup checks the indexed lookups against the reference ones on any
// map and any query.
func FuzzLookup(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "seed.access"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed), uint8(4), "localhost.localdomain", "127.0.0.1", "user@localhost")
	f.Add(clientMap, uint8(0), "a.sub.example.org", "10.1.2.3", "x@[192.0.2.7]")
	f.Add(clientMap, uint8(0), "", "2001:db8:3::1", "")
	f.Add(envelopeMap, uint8(1), "", "", "<User+Foo@Example.NET.>")
	f.Add(envelopeMap, uint8(3), "x", "::ffff:192.0.2.1", "me+abuse@my.domain")
	f.Fuzz(func(t *testing.T, text string, tag uint8, host, addr, address string) {
		m, err := Parse(strings.NewReader(text), "fuzz")
		if err != nil {
			return
		}
		tags := []string{TagConnect, TagFrom, TagTo, TagSpam, TagClientRate, TagClientConn, TagGreetPause, "connect:", "AuthInfo"}
		ip, _ := netip.ParseAddr(addr)
		checkAgainstReference(t, m, tags[int(tag)%len(tags)], host, ip, address)
	})
}

package resolve

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzExtract feeds DNS replies, which come from servers that spammers may
// run, through the code that picks records and names out of them. The seed
// corpus in testdata holds packed replies: CNAME chains, a CNAME loop, more
// PTRs than are tried, mixed case, records of the wrong type.
func FuzzExtract(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil || len(m.Question) != 1 {
			return
		}
		q := m.Question[0]
		a := extract(m, q.Name, q.Qtype)
		if len(a.rrs) > len(m.Answer) {
			t.Fatalf("%d records out of an answer of %d", len(a.rrs), len(m.Answer))
		}
		for _, rr := range a.rrs {
			if rr.Header().Rrtype != q.Qtype {
				t.Fatalf("asked for %s, got %s", dns.TypeToString[q.Qtype], rr)
			}
		}
		names := ptrNames(a.rrs)
		if len(names) > maxNames {
			t.Fatalf("%d names, want at most %d", len(names), maxNames)
		}
		for _, name := range names {
			if name == "" || strings.HasSuffix(name, ".") || strings.ToLower(name) != name {
				t.Fatalf("name %q not normalised", name)
			}
		}
		containsAddr(a.rrs, netip.MustParseAddr("127.0.0.5"))
	})
}

package dnstest

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzLoad checks that any zone file either loads or is refused with an
// error, and that a loaded zone answers for each of its names.
func FuzzLoad(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		z := NewZone()
		if err := z.Load(strings.NewReader(text), "fuzz.zone"); err != nil {
			return
		}
		if len(z.rrs) > 100 {
			return // $GENERATE makes big zones; answering for each is slow
		}
		for name := range z.rrs {
			for _, qtype := range []uint16{dns.TypeA, dns.TypePTR, dns.TypeCNAME, dns.TypeANY} {
				m := new(dns.Msg)
				z.answer(m, name, qtype)
				if m.Rcode == dns.RcodeNameError && len(m.Answer) == 0 {
					t.Fatalf("%s %s: NXDOMAIN for a name in the zone", name, dns.TypeToString[qtype])
				}
			}
		}
	})
}

package tcpwrap

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary files to Parse. It must never panic, and a table
// it accepts must give, for a spread of clients and one made from the fuzzed
// name and address, the same verdict through its index as a plain
// rule-by-rule walk.
func FuzzParse(f *testing.F) {
	f.Add("mxguard: 127.0.0.1\n", "sendmail: .adsl.alicedsl.de\nALL: ALL\n", "host5.adsl.alicedsl.de", []byte{198, 51, 100, 7})
	f.Add("", "ALL EXCEPT sshd: .example.org EXCEPT mail.example.org : allow\n", "mail.example.org", []byte{192, 0, 2, 1})
	f.Add("ALL: [2001:db8::]/32, 192.0.2.0/255.255.255.0, 198.51.100. : deny\n", "ALL: PARANOID UNKNOWN\n", "", []byte{0x20, 1, 0xd, 0xb8, 15: 1})
	f.Add("mxguard: mx?.example.*, mail. : spawn /bin/true\\: x : allow", "#c\\\nALL: LOCAL KNOWN\\\n", "mx1.example.net", []byte{127, 0, 0, 1})
	clients := []Client{
		client("127.0.0.1", "localhost"),
		client("192.0.2.1", "mail.example.org"),
		client("198.51.100.7", "host5.adsl.alicedsl.de"),
		client("2001:db8::1", "mx1.example.net"),
		client("203.0.113.9", ""),
		paranoid("192.0.2.99"),
		{},
	}
	f.Fuzz(func(t *testing.T, allow, deny, name string, ip []byte) {
		tbl, err := Parse(strings.NewReader(allow), strings.NewReader(deny), "", "")
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		fuzzed, _ := netip.AddrFromSlice(ip)
		for _, c := range append(clients, Client{Addr: fuzzed, Name: name}, Client{Addr: fuzzed, Name: name, Paranoid: true}) {
			for _, d := range []string{Daemon, "sendmail", "sshd"} {
				got := tbl.Check(d, c)
				if want := referenceCheck(tbl, d, c); got != want {
					t.Fatalf("Check(%q, %+v) = %+v, rule by rule %+v", d, c, got, want)
				}
			}
		}
	})
}

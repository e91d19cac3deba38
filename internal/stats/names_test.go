package stats

import (
	"net/netip"
	"testing"
)

func TestSuffix(t *testing.T) {
	for _, c := range []struct{ host, want string }{
		// The seed's hosts.deny, from names of the kind its pools hand out.
		{"p1-2-3-4.adsl.alicedsl.de", "adsl.alicedsl.de"},
		{"host-89-229-12-34.internetdsl.tpnet.pl", "internetdsl.tpnet.pl"},
		{"95.red-80-58-1.dynamicip.rima-tde.net", "dynamicip.rima-tde.net"},
		{"adsl-5.adsl-1.sezampro.yu", "adsl-1.sezampro.yu"},
		{"ppp-1-2.dynamic.163data.com.cn", "dynamic.163data.com.cn"},
		{"bd12345.bb-static.vsnl.net.in", "bb-static.vsnl.net.in"},
		{"201-1-2-3.dsl.telesp.net.br", "dsl.telesp.net.br"},
		{"c-1-2-3-4.3g.claro.net.br", "3g.claro.net.br"},
		// The address spelt out in labels of its own.
		{"static.12.34.56.78.clients.your-server.de", "clients.your-server.de"},
		{"1.2.3.4.dyn.example.net", "dyn.example.net"},
		{"x.p5b0a1234.dip0.t-ipconnect.de", "dip0.t-ipconnect.de"},
		// Never a bare registry level, never less than two labels.
		{"host.example.co.uk", "example.co.uk"},
		{"example.co.uk", ""},
		{"a.b.com.br", "b.com.br"},
		{"mail.example.com", "example.com"},
		{"example.com", ""},
		{"localhost", ""},
		{"1234.5678.example", "5678.example"},
		// Case and a trailing dot do not matter; what is no name has none.
		{"Mail.Example.ORG.", "example.org"},
		{"", ""},
		{"unknown", ""},
		{"a..b.example", ""},
		{"evil host.dsl.example", ""},
		{"[192.0.2.1]", ""},
		{"a.b\x00.example", ""},
	} {
		if got := Suffix(c.host); got != c.want {
			t.Errorf("Suffix(%q) = %q, want %q", c.host, got, c.want)
		}
	}
}

func TestNetwork(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"192.0.2.77", "192.0.2.0/24"},
		{"::ffff:192.0.2.77", "192.0.2.0/24"},
		{"2001:db8:1:2:3::4", "2001:db8:1:2::/64"},
	} {
		if got := Network(netip.MustParseAddr(c.addr)).String(); got != c.want {
			t.Errorf("Network(%s) = %s, want %s", c.addr, got, c.want)
		}
	}
}

package stats

import (
	"net/netip"
	"strings"
)

// Network is the network a client is counted in: its /24, or its /64 for
// IPv6, as a dial-up pool or one host's allocation.
func Network(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 24
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// secondLevel are the labels that, under a two-letter country domain, are
// registries' own second levels (co.uk, com.br, net.pl, or.jp): a suffix
// must keep one label more than them to name one provider.
var secondLevel = map[string]bool{
	"ac": true, "co": true, "com": true, "edu": true, "go": true, "gob": true, "gov": true,
	"ltd": true, "mil": true, "ne": true, "net": true, "nic": true, "or": true, "org": true, "plc": true,
}

// Suffix is the part of a client's host name that names its provider's
// pool rather than the host: what a hosts.deny line of the form ".suffix"
// matches, as the seed's admin wrote them (".adsl.alicedsl.de" for
// "p1-2-3-4.adsl.alicedsl.de"). It drops the first label, then any
// further leading label that is a number or holds four digits or more
// (the address spelt out: "static.12.34.56.78.clients.example.net" gives
// "clients.example.net"), and keeps at least two labels, three under a
// country's registry level ("dsl.example.co.uk", never "co.uk"). "" when
// the name is too short to have one, or is not a host name.
//
// It allocates nothing for a lower-case name: it runs at every refusal.
func Suffix(host string) string {
	host = strings.TrimSuffix(host, ".")
	if !isHostName(host) {
		return ""
	}
	for i := 0; i < len(host); i++ {
		if 'A' <= host[i] && host[i] <= 'Z' {
			host = strings.ToLower(host)
			break
		}
	}
	labels := strings.Count(host, ".") + 1
	keep := 2
	if tld := host[strings.LastIndexByte(host, '.')+1:]; labels >= 2 && len(tld) == 2 {
		rest := host[:len(host)-3]
		if secondLevel[rest[strings.LastIndexByte(rest, '.')+1:]] {
			keep = 3
		}
	}
	if labels-1 < keep {
		return ""
	}
	s := host[strings.IndexByte(host, '.')+1:]
	labels--
	for labels > keep {
		dot := strings.IndexByte(s, '.')
		if !hostSpecific(s[:dot]) {
			break
		}
		s, labels = s[dot+1:], labels-1
	}
	return s
}

// hostSpecific reports whether a label looks like part of one host's
// name: a number, or four digits or more (an address, a customer number).
func hostSpecific(label string) bool {
	digits := 0
	for i := 0; i < len(label); i++ {
		if '0' <= label[i] && label[i] <= '9' {
			digits++
		}
	}
	return digits == len(label) || digits >= 4
}

// isHostName reports whether s is made of DNS labels of letters, digits,
// '-' and '_', as a resolver returns them: anything else in a log line
// is not a name the server confirmed.
func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	label := 0 // the length of the label so far
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_':
			if label++; label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return label > 0
}

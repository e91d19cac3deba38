package loadgen

import (
	"strings"
	"testing"
)

// FuzzParseAddrs checks that any -bind argument gives a pool or an error,
// never a panic, and that a pool only hands out addresses of the families
// it was given.
func FuzzParseAddrs(f *testing.F) {
	for _, s := range []string{"", "127.0.0.2", "127.0.0.2-127.0.0.200", "::1,127.0.0.1", "::ffff:1.2.3.4-1.2.3.5", "1.2.3.4-", "-", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseAddrs(s)
		if err != nil {
			return
		}
		if p.Len() > maxAddrs {
			t.Fatalf("%d addresses", p.Len())
		}
		for range 3 {
			a := p.Next()
			if p.Len() == 0 {
				if a != nil {
					t.Fatalf("empty pool gave %v", a)
				}
				continue
			}
			if a == nil || a.IP == nil {
				t.Fatal("no address from a non-empty pool")
			}
			if a.IP.To4() == nil && !strings.Contains(s, ":") {
				t.Fatalf("IPv6 address %v from %q", a, s)
			}
		}
	})
}

// FuzzParseProcField checks the /proc line parser on arbitrary files.
func FuzzParseProcField(f *testing.F) {
	f.Add([]byte("Name:\tx\nVmRSS:\t    2032 kB\n"), "VmRSS:")
	f.Add([]byte("Rss: 1 kB\nPss:   259 kB\nPss_Dirty: 1 kB\n"), "Pss:")
	f.Add([]byte("VmRSS: 99999999999999999999 kB\n"), "VmRSS:")
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		n, err := parseProcField(data, key)
		if err == nil && (n < 0 || n%1024 != 0) {
			t.Fatalf("%d bytes", n)
		}
	})
}

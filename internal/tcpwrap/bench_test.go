package tcpwrap

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// domainFile returns a hosts.deny of n sendmail: .domain lines.
func domainFile(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "sendmail: .pool%d.isp%d.example\n", i, i%97)
	}
	return b.String()
}

func BenchmarkCheck(b *testing.B) {
	for _, n := range []int{10, 1000, 100000} {
		tbl := mustParse(b, "mxguard: 127.0.0.1\n", domainFile(n))
		for _, tt := range []struct {
			name    string
			c       Client
			allowed bool
		}{
			{"hit", client("192.0.2.1", fmt.Sprintf("dsl-1-2-3-4.pool%d.isp%d.example", n-1, (n-1)%97)), false},
			{"miss", client("192.0.2.1", "mail.outbound.example.org"), true},
		} {
			b.Run(fmt.Sprintf("entries=%d/%s", n, tt.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if v := tbl.Check(Daemon, tt.c); v.Allowed != tt.allowed {
						b.Fatalf("Check = %+v", v)
					}
				}
			})
		}
	}
}

// BenchmarkCheckMixed has every kind of pattern in use, so that a check
// walks every map and the scanned rules.
func BenchmarkCheckMixed(b *testing.B) {
	seed, err := os.ReadFile(filepath.Join("testdata", "hosts.deny"))
	if err != nil {
		b.Fatal(err)
	}
	deny := string(seed) +
		"ALL: PARANOID\n" +
		"mxguard: 198.51.100.0/24, 203.0.113., [2001:db8::]/32\n" +
		"mxguard: *.dialup.example.net\n" +
		"ALL EXCEPT sshd: .spam.example EXCEPT ok.spam.example\n"
	tbl := mustParse(b, "mxguard: 127.0.0.1, LOCAL\n", deny)
	c := client("192.0.2.1", "mail.outbound.example.org")
	b.ReportAllocs()
	for b.Loop() {
		if v := tbl.Check(Daemon, c); !v.Allowed {
			b.Fatalf("Check = %+v", v)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	seed, err := os.ReadFile(filepath.Join("testdata", "hosts.deny"))
	if err != nil {
		b.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		deny string
	}{
		{"seed", string(seed)},
		{"entries=100000", domainFile(100000)},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tt.deny)))
			for b.Loop() {
				if _, err := Parse(nil, strings.NewReader(tt.deny), "", ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

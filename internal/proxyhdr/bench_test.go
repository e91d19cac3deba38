package proxyhdr

import (
	"bufio"
	"bytes"
	"io"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkParse: what reading one header costs a proxied connection,
// beyond the connection's own reads: the parser and its allocations.
func BenchmarkParse(b *testing.B) {
	own := netip.MustParseAddrPort("127.0.0.1:4000")
	v4 := v2inet(netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.1"), 40000, 25)
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"v1", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n")},
		{"v2", v2(0x21, 0x11, v4)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := bytes.NewReader(bc.in)
			br := bufio.NewReaderSize(r, bufSize)
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(bc.in)
				br.Reset(r)
				if _, err := read(br, own, time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGuard: what Guard adds to a session that reads its first
// command one octet at a time (as the greeting pause and the idle wait
// read), against the same reads without it.
func BenchmarkGuard(b *testing.B) {
	in := []byte("EHLO client.example\r\n")
	for _, guarded := range []bool{false, true} {
		name := "without"
		if guarded {
			name = "with"
		}
		b.Run(name, func(b *testing.B) {
			var p [1]byte
			b.ReportAllocs()
			for b.Loop() {
				c := &bytesConn{r: bytes.NewReader(in)}
				var nc io.Reader = c
				if guarded {
					nc = Guard(c, func(int) {})
				}
				for {
					if _, err := nc.Read(p[:]); err != nil {
						break
					}
				}
			}
		})
	}
}

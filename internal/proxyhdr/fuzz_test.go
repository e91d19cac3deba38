package proxyhdr

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// FuzzRead: whatever a load balancer's connection starts with, read never
// panics, takes a header only when it names a usable client, and hands on
// every octet after the header exactly: what it consumed plus what is left
// is the input. It also runs the input through Guard, which refuses it
// exactly when it starts with a signature and otherwise changes nothing.
func FuzzRead(f *testing.F) {
	v4 := v2inet(netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.1"), 40000, 25)
	for _, s := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\nEHLO x\r\n"),
		[]byte("PROXY TCP6 2001:db8::7 2001:db8::25 40001 25\r\nQUIT\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP4 192.0.2.10 198.51.100.1"),
		v2(0x21, 0x11, v4),
		v2(0x20, 0x00, nil),
		append(v2(0x21, 0x11, append(append([]byte(nil), v4...), tlv(0x01, "smtp")...)), "EHLO x\r\n"...),
		v2(0x21, 0x11, v4)[:20],
		[]byte("EHLO client.example\r\n"),
	} {
		f.Add(s)
	}
	own := netip.MustParseAddrPort("127.0.0.1:4000")
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), bufSize)
		h, err := read(br, own, time.Second)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Detail == "" {
				t.Fatalf("read(%q) = %v: not an *Error with a text", in, err)
			}
		} else {
			if h.Version != 1 && h.Version != 2 || !h.Client.IsValid() || h.Client.Addr().Is4In6() {
				t.Fatalf("read(%q) = %+v", in, h)
			}
			if h.Local && h.Client != own {
				t.Fatalf("read(%q): LOCAL header with client %v", in, h.Client)
			}
			rest, _ := io.ReadAll(br)
			consumed := len(in) - len(rest)
			if consumed <= 0 || !bytes.Equal(rest, in[consumed:]) {
				t.Fatalf("read(%q): %d octets left, not the input's tail", in, len(rest))
			}
			if v := signature(in); v != h.Version {
				t.Fatalf("read(%q) took a v%d header that Guard sees as %d", in, h.Version, v)
			}
		}

		// Guard, read in small pieces as the SMTP session reads.
		seen := 0
		g := Guard(&bytesConn{r: bytes.NewReader(in)}, func(v int) { seen = v })
		var got []byte
		buf := make([]byte, 1)
		for range len(in) + 2 {
			n, err := g.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
			buf = make([]byte, 1+len(got)%7)
		}
		want := signature(in)
		if want < 0 {
			want = 0 // the input ends inside a signature: handed on
		}
		if seen != want {
			t.Fatalf("Guard(%q) saw version %d, want %d", in, seen, want)
		}
		if seen == 0 && !bytes.Equal(got, in) {
			t.Fatalf("Guard(%q) handed on %q", in, got)
		}
		if seen > 0 && len(got) > 0 {
			t.Fatalf("Guard(%q) refused but handed on %q", in, got)
		}
	})
}

// bytesConn is a connection whose peer sent b and closed: only Read is
// used by Guard.
type bytesConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }

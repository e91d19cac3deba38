package proxyhdr

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a real TCP connection on loopback: the
// server's (accepted) and the client's.
func pair(t *testing.T) (srv, cli net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}

// v2 builds a v2 header: command (0x20 LOCAL, 0x21 PROXY), family and
// transport, and the address block and TLVs as given.
func v2(cmd, fam byte, body []byte) []byte {
	b := append([]byte(nil), sigV2...)
	b = append(b, cmd, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(body)))
	return append(b, body...)
}

func v2inet(src, dst netip.Addr, sport, dport uint16) []byte {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, sport), dport)
}

// tlv is one type-length-value of a v2 header.
func tlv(typ byte, v string) []byte {
	return append(binary.BigEndian.AppendUint16([]byte{typ}, uint16(len(v))), v...)
}

// TestRead: each form of header a proxy sends yields its client, and what
// the client sent after it reads back whole, octet for octet.
func TestRead(t *testing.T) {
	v4src, v4dst := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.1")
	v6src, v6dst := netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("2001:db8::25")
	const after = "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
	tests := []struct {
		name    string
		header  []byte
		client  string // "" = the connection's own address (LOCAL, UNKNOWN)
		version int
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"), "192.0.2.10:40000", 1},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::7 2001:db8::25 40001 25\r\n"), "[2001:db8::7]:40001", 1},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "", 1},
		{"v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN 2001:db8::7 2001:db8::25 40001 25\r\n"), "", 1},
		{"v2 PROXY IPv4", v2(0x21, 0x11, v2inet(v4src, v4dst, 40002, 25)), "192.0.2.10:40002", 2},
		{"v2 PROXY IPv6", v2(0x21, 0x21, v2inet(v6src, v6dst, 40003, 25)), "[2001:db8::7]:40003", 2},
		{"v2 PROXY IPv4 in IPv6", v2(0x21, 0x21, v2inet(netip.AddrFrom16(v4src.As16()), netip.AddrFrom16(v4dst.As16()), 40004, 25)), "192.0.2.10:40004", 2},
		{"v2 LOCAL", v2(0x20, 0x00, nil), "", 2},
		{"v2 LOCAL with an address block", v2(0x20, 0x11, v2inet(v4src, v4dst, 1, 2)), "", 2},
		{"v2 TLVs ignored", v2(0x21, 0x11, slicesConcat(v2inet(v4src, v4dst, 40005, 25),
			tlv(0x01, "smtp"), tlv(0x02, "mx.example.org"), tlv(0x04, ""), tlv(0xE0, strings.Repeat("x", 600)))), "192.0.2.10:40005", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := pair(t)
			if _, err := cli.Write(append(append([]byte(nil), tc.header...), after...)); err != nil {
				t.Fatal(err)
			}
			c, h, err := Read(context.Background(), srv, time.Second)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			want := addrPort(cli.LocalAddr())
			if tc.client != "" {
				want = netip.MustParseAddrPort(tc.client)
			}
			if h.Client != want || h.Version != tc.version || h.Local != (tc.client == "") {
				t.Errorf("header = %+v, want client %v version %d local %v", h, want, tc.version, tc.client == "")
			}
			if got := c.RemoteAddr().String(); got != want.String() {
				t.Errorf("RemoteAddr = %s, want %s", got, want)
			}
			cli.Close()
			rest, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(rest) != after {
				t.Errorf("after the header: %q, want %q", rest, after)
			}
		})
	}
}

func slicesConcat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// TestReadKeepsLargeRest: a client that sends much right behind the
// header (a pipelined batch, or a flood) loses none of it, whatever part
// came in with the header's read.
func TestReadKeepsLargeRest(t *testing.T) {
	srv, cli := pair(t)
	rest := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	go func() {
		cli.Write(append([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"), rest...))
		cli.Close()
	}()
	c, _, err := Read(context.Background(), srv, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Small reads, as the SMTP session's first (one octet) is.
	var got []byte
	buf := make([]byte, 1)
	for len(got) < len(rest)+1 {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		buf = make([]byte, 1+len(got)%700)
	}
	if !bytes.Equal(got, rest) {
		t.Errorf("read back %d octets, want the %d sent after the header (equal: %v)", len(got), len(rest), bytes.Equal(got, rest))
	}
}

// TestReadRefuses: what is not a whole, well-formed header is refused
// with a reason a log reader understands, and Read returns at once
// unless it must wait for octets that could still complete the header.
func TestReadRefuses(t *testing.T) {
	v4 := v2inet(netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.1"), 40000, 25)
	tests := []struct {
		name   string
		send   []byte
		close  bool   // the client closes after sending
		want   string // in the error
		waited bool   // the error comes only at the timeout
	}{
		{"SMTP instead", []byte("EHLO client.example\r\n"), false, `no PROXY protocol header: the connection starts with "EHLO client."`, false},
		{"wrong v1 signature", []byte("PROXZ TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"), false, "no PROXY protocol header", false},
		{"wrong v2 signature", append([]byte("\r\n\r\n\x00\r\nQUIT!"), v4...), false, "no PROXY protocol header", false},
		{"nothing", nil, false, "no complete PROXY protocol header within", true},
		{"closed at once", nil, true, "connection closed before the PROXY header", false},
		{"v1 truncated", []byte("PROXY TCP4 192.0.2.10 198.51.100.1"), false, "truncated PROXY v1 header", false},
		{"v1 without CR", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\n"), false, "malformed PROXY header", false},
		{"v1 bad address", []byte("PROXY TCP4 192.0.2.300 198.51.100.1 40000 25\r\n"), false, "malformed PROXY header", false},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::7 198.51.100.1 40000 25\r\n"), false, "malformed PROXY header", false},
		{"v1 bad port", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 70000 25\r\n"), false, "malformed PROXY header", false},
		{"v1 UDP", []byte("PROXY UDP4 192.0.2.10 198.51.100.1 40000 25\r\n"), false, "malformed PROXY header", false},
		{"v1 oversized", []byte("PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n"), false, "PROXY v1 header too long", false},
		{"v2 truncated, closed", v2(0x21, 0x11, v4)[:22], true, "connection closed inside the PROXY header", false},
		{"v2 truncated, silent", v2(0x21, 0x11, v4)[:22], false, "no complete PROXY protocol header within", true},
		{"v2 signature only", sigV2, false, "no complete PROXY protocol header within", true},
		{"v2 oversized", v2(0x21, 0x11, append(v4, make([]byte, 5000)...)), false, "PROXY v2 header too long (5012 octets", false},
		{"v2 address block short", v2(0x21, 0x21, v4), false, "malformed PROXY header", false},
		{"v2 version 3", v2(0x31, 0x11, v4), false, "malformed PROXY header", false},
		{"v2 unknown command", v2(0x22, 0x11, v4), false, "malformed PROXY header", false},
		{"v2 PROXY UNSPEC", v2(0x21, 0x00, nil), false, "malformed PROXY header", false},
		{"v2 UDP", v2(0x21, 0x12, v4), false, "PROXY header names no TCP client (address family 0x12)", false},
		{"v2 Unix", v2(0x21, 0x31, make([]byte, 216)), false, "PROXY header names no TCP client (address family 0x31)", false},
	}
	const timeout = 300 * time.Millisecond
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := pair(t)
			if len(tc.send) > 0 {
				if _, err := cli.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			if tc.close {
				cli.Close()
			}
			start := time.Now()
			c, _, err := Read(context.Background(), srv, timeout)
			took := time.Since(start)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Read = %v, %v; want an *Error", c, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			// Margins for a loaded machine: at the timeout, not long
			// after; without a wait, well before it.
			if tc.waited && (took < timeout || took > timeout+2*time.Second) {
				t.Errorf("refused after %v, want at the timeout (%v)", took, timeout)
			}
			if !tc.waited && took >= timeout {
				t.Errorf("refused after %v: waited for the timeout", took)
			}
		})
	}
}

// TestReadStopsWithContext: a hard stop ends the wait for a header at
// once, and says it is the stop, not the peer.
func TestReadStopsWithContext(t *testing.T) {
	srv, _ := pair(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := Read(ctx, srv, time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Read = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("returned after %v", took)
	}
}

// TestReadClearsDeadline: after the header, the connection has no read
// deadline left over from the header's (the SMTP session sets its own).
func TestReadClearsDeadline(t *testing.T) {
	srv, cli := pair(t)
	cli.Write([]byte("PROXY UNKNOWN\r\n"))
	c, _, err := Read(context.Background(), srv, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	cli.Write([]byte("x"))
	var b [1]byte
	if n, err := c.Read(b[:]); n != 1 || err != nil {
		t.Errorf("read after the header's timeout = %d, %v", n, err)
	}
}

// guarded returns the server end of a loopback connection behind Guard,
// and a function telling which header version Guard saw (0: none).
func guarded(t *testing.T) (g net.Conn, cli net.Conn, seen func() int) {
	srv, cli := pair(t)
	v := 0
	g = Guard(srv, func(version int) {
		if v != 0 {
			t.Error("onHeader called twice")
		}
		v = version
	})
	return g, cli, func() int { return v }
}

// TestGuard: a connection that starts with a header's signature is
// refused; any other is handed on unchanged, octet for octet, even read
// one octet at a time as the greeting pause reads.
func TestGuard(t *testing.T) {
	tests := []struct {
		name    string
		send    []string // written one after another, with a pause between
		version int      // the header Guard must see; 0: none
	}{
		{"v1", []string{"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\nEHLO x\r\n"}, 1},
		{"v1 UNKNOWN", []string{"PROXY UNKNOWN\r\n"}, 1},
		{"v1 split", []string{"PRO", "XY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"}, 1},
		{"v2", []string{string(v2(0x21, 0x11, make([]byte, 12)))}, 2},
		{"v2 split after its NUL", []string{string(sigV2[:6]), string(sigV2[6:]) + "\x21\x11\x00\x00"}, 2},
		{"SMTP", []string{"EHLO client.example\r\n", "MAIL FROM:<a@example.org>\r\n"}, 0},
		{"PROXYX", []string{"PROXYX\r\n"}, 0},
		{"proxy lower case", []string{"proxy TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"}, 0},
		{"P then more", []string{"P", "ING\r\n"}, 0},
		{"empty lines", []string{"\r\n\r\n", "NOOP\r\n"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, cli, seen := guarded(t)
			go func() {
				for i, s := range tc.send {
					if i > 0 {
						time.Sleep(50 * time.Millisecond)
					}
					cli.Write([]byte(s))
				}
				cli.(*net.TCPConn).CloseWrite()
			}()
			g.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got []byte
			var b [1]byte
			var err error
			for {
				var n int
				n, err = g.Read(b[:])
				got = append(got, b[:n]...)
				if err != nil {
					break
				}
			}
			if seen() != tc.version {
				t.Errorf("Guard saw version %d, want %d", seen(), tc.version)
			}
			if tc.version > 0 {
				if !errors.Is(err, ErrUnexpected) || len(got) != 0 {
					t.Errorf("read %q, %v; want nothing and ErrUnexpected", got, err)
				}
				if n, err := g.Read(b[:]); n != 0 || !errors.Is(err, ErrUnexpected) {
					t.Errorf("next read = %d, %v; want ErrUnexpected again", n, err)
				}
				return
			}
			if err != io.EOF || string(got) != strings.Join(tc.send, "") {
				t.Errorf("read %q, %v; want %q, EOF", got, err, strings.Join(tc.send, ""))
			}
		})
	}
}

// TestGuardWaitsForNothing: an SMTP client that sends an empty line and
// waits for its reply gets the line handed on at once, although it is
// the start of v2's signature; so does one that sends a line and waits.
func TestGuardWaitsForNothing(t *testing.T) {
	for _, first := range []string{"\r\n", "\r\n\r\n", "EHLO x\r\n", "Q"} {
		g, cli, _ := guarded(t)
		cli.Write([]byte(first))
		g.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := g.Read(buf)
		if err != nil || string(buf[:n]) != first[:n] || n == 0 {
			t.Errorf("%q: first read = %q, %v", first, buf[:n], err)
		}
	}
}

// TestGuardPartialThenTimeout: octets that could start a header and then
// stop are handed on when the caller's deadline passes, and the deadline's
// error comes with the next read, as without the guard.
func TestGuardPartialThenTimeout(t *testing.T) {
	g, cli, seen := guarded(t)
	cli.Write([]byte("PROX"))
	g.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var b [1]byte
	var got []byte
	var err error
	for range 10 {
		var n int
		n, err = g.Read(b[:])
		got = append(got, b[:n]...)
		if err != nil {
			break
		}
	}
	var ne net.Error
	if string(got) != "PROX" || !errors.As(err, &ne) || !ne.Timeout() || seen() != 0 {
		t.Errorf("read %q, %v (header seen: %d); want \"PROX\" and a timeout", got, err, seen())
	}
}

// TestSyscallConn: the greeting pause's holder may watch the socket under
// a Conn or a guard only while no octet the client sent waits above it,
// where the socket turning readable would never tell of it.
func TestSyscallConn(t *testing.T) {
	srv, cli := pair(t)
	cli.Write([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\nEHLO"))
	c, _, err := Read(context.Background(), srv, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatal("a Conn is not a syscall.Conn")
	}
	if _, err := sc.SyscallConn(); err == nil {
		t.Error("SyscallConn with the client's EHLO read along with the header")
	}
	io.ReadFull(c, make([]byte, 4))
	if _, err := sc.SyscallConn(); err != nil {
		t.Errorf("SyscallConn once the buffered octets are read: %v", err)
	}

	srv, cli = pair(t)
	g := Guard(srv, func(int) {}).(syscall.Conn)
	if _, err := g.SyscallConn(); err != nil {
		t.Errorf("SyscallConn of a fresh guard: %v", err)
	}
	cli.Write([]byte("PROX")) // could be a header: the guard reads on and keeps it
	srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	gg := Guard(srv, func(int) {})
	gg.Read(make([]byte, 1))
	if _, err := gg.(syscall.Conn).SyscallConn(); err == nil {
		t.Error("SyscallConn of a guard holding the client's octets")
	}

	var nc net.Conn = Guard(struct{ net.Conn }{srv}, func(int) {})
	if _, err := nc.(syscall.Conn).SyscallConn(); err == nil {
		t.Error("SyscallConn of a guard over a connection without a socket")
	}
}

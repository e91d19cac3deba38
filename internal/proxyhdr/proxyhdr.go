// Package proxyhdr reads the PROXY protocol header (HAProxy's, v1 text or
// v2 binary) that a load balancer puts in front of a connection to name
// the client it took the connection from, and spots one that a client
// sends where none is expected.
//
// The parsing is github.com/pires/go-proxyproto's header parser alone
// (proxyproto.Read on a bufio.Reader): it is the usual Go implementation,
// kept up, fuzzed upstream and hardened against the header's known abuses
// (v1 lines without an end, v2 lengths that allocate, address families
// that decode to nothing). Its listener and Conn wrappers are not used:
// they read the header lazily, on the first Read or RemoteAddr call, which
// would put the wait for the header inside the greeting pause, after
// admission has already judged the load balancer's address. Here the
// header is read first, in the connection's own goroutine, under its own
// deadline, and admission sees only the client it names.
package proxyhdr

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// Timeout is how long a load balancer has to send the whole header. A
// proxy writes it at once as it connects (the specification asks it to
// send it in one segment), so on any network it arrives within a round
// trip; three seconds leave a margin for a loaded proxy and still free a
// goroutine that a silent or broken peer holds long before any SMTP
// timeout would.
const Timeout = 3 * time.Second

// bufSize is the read buffer for the header: larger than the longest v1
// line (107 octets), which the parser wants in one read, and than a v2
// header without large TLVs (16 + 36 octets, plus what HAProxy adds); a
// v2 header with more is read on through the same buffer. Whatever the
// client sent after the header and arrived in the same reads stays in it
// and is handed on.
const bufSize = 512

// maxV2 is the longest v2 address block and TLVs accepted: the parser's
// own limit, against headers that would allocate 64 KiB each.
var maxV2 = int(proxyproto.MaxV2HeaderSize)

// Header is what a PROXY header said.
type Header struct {
	// Client is the original client: the source address of the header,
	// or for a LOCAL (v2) or UNKNOWN (v1) header, which the proxy sends
	// for connections of its own such as health checks, the address the
	// connection came from.
	Client  netip.AddrPort
	Version int  // 1 or 2
	Local   bool // LOCAL or UNKNOWN: no client named
}

// Error is a header that could not be taken: missing, malformed, too long
// or late. Its text says which, for the log line.
type Error struct {
	Detail string
	Err    error // the parser's or the connection's error, if any
}

func (e *Error) Error() string { return e.Detail }

func (e *Error) Unwrap() error { return e.Err }

// Read reads the PROXY header that must start nc, waiting at most timeout
// (and no longer than ctx: then the error is ctx's), and returns a connection whose reads go on
// right after the header, whose RemoteAddr is the client the header names,
// and the header. Nothing past the header is lost: the octets that came
// with it are read first. Read leaves nc's read deadline unset.
func Read(ctx context.Context, nc net.Conn, timeout time.Duration) (net.Conn, Header, error) {
	own := addrPort(nc.RemoteAddr())
	nc.SetReadDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Unix(1, 0)) })
	br := bufio.NewReaderSize(nc, bufSize)
	h, err := read(br, own, timeout)
	if stop() {
		nc.SetReadDeadline(time.Time{})
	} else {
		return nil, Header{}, ctx.Err() // stopping: no fault of the peer's
	}
	if err != nil {
		return nil, Header{}, err
	}
	c := &Conn{Conn: nc, client: net.TCPAddrFromAddrPort(h.Client)}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		c.rest = bytes.Clone(rest)
	}
	return c, h, nil
}

// read parses the header from br. own is the connection's own remote
// address, the client of a LOCAL header.
func read(br *bufio.Reader, own netip.AddrPort, timeout time.Duration) (Header, error) {
	first, err := br.Peek(1)
	if err != nil {
		return Header{}, ioError(err, "before the PROXY header", timeout)
	}
	switch first[0] {
	case proxyproto.SIGV1[0]:
	case proxyproto.SIGV2[0]:
		// A v2 header is at least 16 octets (a LOCAL one with no address
		// block); its length field says how long the rest is, which is
		// checked here so that the log can say "too long" rather than the
		// parser's "invalid length".
		b, err := br.Peek(16)
		if err != nil {
			return Header{}, ioError(err, "inside the PROXY header", timeout)
		}
		if bytes.Equal(b[:12], proxyproto.SIGV2) {
			if n := int(binary.BigEndian.Uint16(b[14:16])); n > maxV2 {
				return Header{}, &Error{Detail: fmt.Sprintf("PROXY v2 header too long (%d octets after its 16, at most %d)", n, maxV2)}
			}
		}
	default:
		b, _ := br.Peek(br.Buffered())
		return Header{}, &Error{Detail: "no PROXY protocol header: the connection starts with " + quote(b)}
	}
	b, _ := br.Peek(br.Buffered())
	whole := bytes.IndexByte(b[:min(len(b), 107)], '\n') >= 0
	ph, err := proxyproto.Read(br)
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		b, _ := br.Peek(br.Buffered())
		return Header{}, &Error{Detail: "no PROXY protocol header: the connection starts with " + quote(b), Err: err}
	case err == proxyproto.ErrCantReadVersion1Header && !whole:
		// The parser takes a v1 line only whole from the first read, as
		// a proxy sends it; it found no LF in what came.
		return Header{}, &Error{Detail: "truncated PROXY v1 header (no line end in the octets that came first)", Err: err}
	case errors.Is(err, proxyproto.ErrVersion1HeaderTooLong):
		return Header{}, &Error{Detail: "PROXY v1 header too long (no CRLF in its first 107 octets)", Err: err}
	case isTimeout(err), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return Header{}, ioError(err, "inside the PROXY header", timeout)
	case err != nil:
		return Header{}, &Error{Detail: "malformed PROXY header: " + strings.TrimPrefix(err.Error(), "proxyproto: "), Err: err}
	}
	h := Header{Version: int(ph.Version)}
	if ph.Command.IsLocal() {
		h.Client, h.Local = own, true
		return h, nil
	}
	src, _, ok := ph.TCPAddrs()
	if !ok {
		// UDP or Unix addresses: nothing a TCP client could have.
		return Header{}, &Error{Detail: fmt.Sprintf("PROXY header names no TCP client (address family %#02x)", byte(ph.TransportProtocol))}
	}
	a, ok := netip.AddrFromSlice(src.IP)
	if !ok {
		return Header{}, &Error{Detail: "malformed PROXY header: no client address"}
	}
	h.Client = netip.AddrPortFrom(a.Unmap(), uint16(src.Port))
	return h, nil
}

// ioError is the Error of a read that failed where: the peer left, or the
// header was not all there in time.
func ioError(err error, where string, timeout time.Duration) error {
	switch {
	case isTimeout(err):
		return &Error{Detail: fmt.Sprintf("no complete PROXY protocol header within %v", timeout), Err: err}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Detail: "connection closed " + where, Err: err}
	}
	return &Error{Detail: "reading the PROXY header: " + err.Error(), Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// quote shows what a client sent, at most 12 octets, in Go's quoting: a
// log line holds no control characters of the client's.
func quote(b []byte) string {
	if len(b) > 12 {
		b = b[:12]
	}
	return fmt.Sprintf("%q", b)
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// Conn is a connection after its PROXY header: reads start with what came
// in with the header, and RemoteAddr is the client the header named.
type Conn struct {
	net.Conn
	rest   []byte
	client *net.TCPAddr
}

// Read returns the octets that arrived with the header first, then reads
// the connection.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) == 0 {
			c.rest = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr is the client the header named.
func (c *Conn) RemoteAddr() net.Addr { return c.client }

// SyscallConn gives the socket to a watcher of its readiness (the greeting
// pause's hold) only while nothing the client sent waits here: what came
// with the header would never make the socket readable.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if len(c.rest) > 0 {
		return nil, errBuffered
	}
	return rawConn(c.Conn)
}

// SyscallConn gives the socket to a watcher of its readiness only while
// the guard holds none of the client's octets.
func (g *guard) SyscallConn() (syscall.RawConn, error) {
	if g.off < g.n {
		return nil, errBuffered
	}
	return rawConn(g.Conn)
}

var errBuffered = errors.New("client data buffered above the socket")

func rawConn(nc net.Conn) (syscall.RawConn, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, errors.New("no socket under the connection")
	}
	return sc.SyscallConn()
}

// ErrUnexpected is the read error of a connection that Guard found
// starting with a PROXY header.
var ErrUnexpected = errors.New("PROXY protocol header where none is expected")

// Guard returns nc watched for a PROXY header at its start: from a client
// whose header is not to be believed (its address is not a load balancer's,
// or it is the client behind one, which already sent its own), a header is
// an attempt to pass for another address, or a load balancer that mxguard
// was not told about, whose clients would all count as one. Its first Read
// calls onHeader and fails with ErrUnexpected when the connection starts
// with a header's signature; otherwise the guard only hands on what it read.
//
// The guard waits for nothing the caller would not: it looks only at the
// octets the caller's first read asks for anyway (within the caller's
// deadline), a few more only while they could still be a signature.
func Guard(nc net.Conn, onHeader func(version int)) net.Conn {
	return &guard{Conn: nc, onHeader: onHeader}
}

// The signatures Guard looks for: v1's "PROXY " (the space too: no SMTP
// verb is PROXY, but a line "PROXYX" is not a header) and v2's 12 octets.
var (
	sigV1 = []byte("PROXY ")
	sigV2 = proxyproto.SIGV2
)

type guard struct {
	net.Conn
	onHeader func(version int)
	state    int // guardNew, guardPassing, guardRefused
	buf      [12]byte
	off, n   int // buf[off:n] read while looking, not yet handed on
}

const (
	guardNew = iota
	guardPassing
	guardRefused
)

func (g *guard) Read(p []byte) (int, error) {
	switch {
	case g.off < g.n:
		k := copy(p, g.buf[g.off:g.n])
		g.off += k
		return k, nil
	case g.state == guardPassing:
		return g.Conn.Read(p)
	case g.state == guardRefused:
		return 0, ErrUnexpected
	}
	for {
		k, err := g.Conn.Read(g.buf[g.n:])
		g.n += k
		if v := signature(g.buf[:g.n]); v > 0 {
			g.state, g.n = guardRefused, 0
			g.onHeader(v)
			return 0, ErrUnexpected
		} else if v < 0 && err == nil {
			continue // a signature so far: its rest decides
		}
		g.state = guardPassing
		if g.n == 0 {
			return 0, err
		}
		// An error after some octets comes again on the next read.
		k = copy(p, g.buf[:g.n])
		g.off = k
		return k, nil
	}
}

// signature tells whether b is a whole signature (its version), the
// start of one that needs more octets (-1), or neither (0). v2's starts
// with two empty lines, which an SMTP client may send and then wait for
// their replies: only past them (at its NUL) is it worth waiting for.
func signature(b []byte) int {
	for v, sig := range [][]byte{sigV1, sigV2} {
		n := min(len(b), len(sig))
		if n == 0 || !bytes.Equal(b[:n], sig[:n]) {
			continue
		}
		switch {
		case n == len(sig):
			return v + 1
		case v == 1 && n < 5:
			return 0
		}
		return -1
	}
	return 0
}

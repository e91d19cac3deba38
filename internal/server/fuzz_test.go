package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/testcert"
)

// FuzzSession runs whole SMTP sessions from arbitrary client bytes against
// the fully configured server: a real configuration file and access map
// through New, admission, the protocol, the handler's policy and storage
// into a Maildir or the spool. Each session runs in a synctest bubble over
// an in-memory connection, so nothing touches the network, and the second
// that bad_rcpt_throttle makes a client wait, like every other wait, costs
// no real time.
//
// mode chooses the client and the server's settings (the fuzzMode bits);
// in is everything the client sends. After each input the server's
// replies, what it stored, the files it wrote, its log and its goroutines
// are checked against what the configuration allows (fuzzCheck).
//
// Every message accepted is fsynced: with TMPDIR on a tmpfs the fuzzer
// runs many times faster than on a disk.
func FuzzSession(f *testing.F) {
	certFile, keyFile := testcert.WriteFiles(f, f.TempDir(), fuzzHostname)
	for _, s := range fuzzSeeds {
		f.Add(s.mode, []byte(s.in))
	}
	f.Fuzz(func(t *testing.T, mode uint16, in []byte) {
		synctest.Test(t, func(t *testing.T) {
			fuzzSession(t, certFile, keyFile, fuzzMode(mode), in)
		})
	})
}

// fuzzSeeds are a few plain sessions; testdata/fuzz/FuzzSession has one
// named file for each attack and policy entry.
var fuzzSeeds = []struct {
	mode uint16
	in   string
}{
	{1, "EHLO client.example\r\nMAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.org>\r\n" +
		"DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n"},
	{2 | uint16(modeRelay), "EHLO client.example\r\nMAIL FROM:<alice@example.org> SIZE=40\r\n" +
		"RCPT TO:<carol@elsewhere.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n"},
	{1 | uint16(modeTLS|modePolite), "EHLO client.example\r\nSTARTTLS\r\n"},
}

// fuzzMode is the first fuzz argument: which client talks to which server.
type fuzzMode uint16

const (
	modeClient fuzzMode = 7       // bits 0-2: an index into fuzzClients
	modeRelay  fuzzMode = 1 << 3  // deliver to a relay (mail waits in the spool), else into Maildirs
	modeTLS    fuzzMode = 1 << 4  // a certificate is configured: STARTTLS is offered
	modeDelay  fuzzMode = 1 << 5  // delay_checks
	modeChunk  fuzzMode = 3 << 6  // bits 6-7: the client's octets arrive whole, or 1, 3 or 61 at a time
	modePolite fuzzMode = 1 << 8  // the client waits for the greeting before it sends
	modeNoTerm fuzzMode = 1 << 9  // terminate = false: over-limit clients get 452 at MAIL/RCPT, not 421
	modeRepeat fuzzMode = 1 << 10 // the client connects repeatSessions times, sending in each time
	modeStall  fuzzMode = 1 << 11 // at the end of its input the client goes silent (the server times out) instead of closing
	modeRawTLS fuzzMode = 1 << 12 // after STARTTLS the client goes on in plaintext, not TLS
)

// repeatSessions is how many sessions modeRepeat runs one after the
// other from the same client with the same input: one more than
// client_rate, so that the last is over the limit.
const repeatSessions = 3

var chunkSizes = [4]int{0, 1, 3, 61}

func (m fuzzMode) String() string {
	c := fuzzClients[m&modeClient]
	s := fmt.Sprintf("mode=%#x client=%s", uint16(m), c.addr)
	for _, b := range []struct {
		bit  fuzzMode
		name string
	}{{modeRelay, "relay"}, {modeTLS, "tls"}, {modeDelay, "delay_checks"}, {modePolite, "polite"},
		{modeNoTerm, "no-terminate"}, {modeRepeat, "repeat"}, {modeStall, "stall"}, {modeRawTLS, "raw-tls"}} {
		if m&b.bit != 0 {
			s += " " + b.name
		}
	}
	if n := chunkSizes[(m&modeChunk)>>6]; n > 0 {
		s += fmt.Sprintf(" chunk=%d", n)
	}
	return s
}

const fuzzHostname = "mx.example.org"

// fuzzClient is one client the fuzzer can be, and what the configuration
// below says about it.
type fuzzClient struct {
	addr    netip.Addr
	dns     resolve.Result // what the fixed reverse DNS says about addr
	trusted bool           // in trusted_networks
	relay   bool           // Connect: RELAY
	discard bool           // Connect: DISCARD
	refused bool           // Connect: REJECT or ERROR: refused before the greeting
	pause   bool           // GreetPause: holds the greeting
}

var fuzzClients = [8]fuzzClient{
	{addr: netip.MustParseAddr("192.0.2.10"), dns: resolve.Result{Name: "mail.example.net", Status: resolve.OK}, pause: true},
	{addr: netip.MustParseAddr("198.51.100.7"), dns: resolve.Result{Status: resolve.NoName}},
	{addr: netip.MustParseAddr("127.0.0.1"), dns: resolve.Result{Name: "localhost", Status: resolve.OK}, trusted: true},
	{addr: netip.MustParseAddr("198.51.100.25"), dns: resolve.Result{Status: resolve.NoName}, relay: true},
	{addr: netip.MustParseAddr("198.51.100.66"), dns: resolve.Result{Status: resolve.NoName}, discard: true},
	{addr: netip.MustParseAddr("192.0.2.99"), dns: resolve.Result{Status: resolve.NoName}, refused: true},
	{addr: netip.MustParseAddr("192.0.2.50"), dns: resolve.Result{Name: "host.spammy.example", Status: resolve.OK}, refused: true},
	{addr: netip.MustParseAddr("2001:db8::25"), dns: resolve.Result{PTR: "forged.example.com", Status: resolve.Mismatch}},
}

// fixedDNS stands for the DNS data of the fuzz clients: no lookup leaves
// the process.
type fixedDNS struct{}

func (fixedDNS) Verify(_ context.Context, addr netip.Addr) resolve.Result {
	for _, c := range fuzzClients {
		if c.addr == addr {
			return c.dns
		}
	}
	return resolve.Result{Status: resolve.NoName}
}

// fuzzAccess has an entry of every kind admission and the handler act on.
// checkMsg names the same addresses.
const fuzzAccess = `# clients
Connect:198.51.100.25       RELAY
Connect:198.51.100.66       DISCARD
Connect:192.0.2.99          REJECT
Connect:spammy.example      ERROR:4.7.1:421 Too much spam from your network
GreetPause:192.0.2.10       2000
# senders
From:spammer@spam.example   REJECT
From:angry.example          ERROR:5.7.1:550 Mail from angry.example refused
From:bulk@mass.example      DISCARD
# recipients
To:closed@example.org       REJECT
To:kevin@example.org        REJECT
To:full@example.org         ERROR:4.2.2:452 Mailbox full
To:trash@example.org        DISCARD
To:partner.example          RELAY
Spam:friend@example.org     FRIEND
Spam:postmaster@example.org FRIEND
`

// fuzzRecipients and fuzzAliases say who exists: all of example.org,
// three names of mail.example.org (and its postmaster).
const (
	fuzzRecipients = "@example.org\nalice@mail.example.org\nBob@Mail.Example.org OK\n"
	fuzzAliases    = "team: alice, bob@mail.example.org\nroot: \\alice\n"
)

// knownAt is who may receive mail at mail.example.org: the listed, the
// postmaster and the alias targets.
var knownAt = []string{"alice", "bob", "postmaster"}

const (
	fuzzMaxSize  = 4 << 10
	fuzzMaxRcpts = 5
	fuzzWindow   = 60 * time.Second
)

// fuzzConfig is the configuration file for mode; paths are relative to
// the file, as an operator would write them.
func fuzzConfig(mode fuzzMode, certFile, keyFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `hostname = %q
data_dir = "data"
local_domains = ["example.org", "mail.example.org"]
trusted_networks = ["127.0.0.0/8"]
access_map = "access"
delay_checks = %t
`, fuzzHostname, mode&modeDelay != 0)
	if mode&modeTLS != 0 {
		fmt.Fprintf(&b, "tls_cert = %q\ntls_key = %q\n", certFile, keyFile)
	}
	// client_conn and max_daemon_children of 1: a session that kept its
	// slot would get the next one of a repeat refused.
	fmt.Fprintf(&b, `
[limits]
max_daemon_children = 1
client_rate = %d
client_conn = 1
connection_rate_window_size = "%ds"
terminate = %t
bad_rcpt_throttle = 2
max_rcpts_per_message = %d
max_message_size = %d

[timeouts]
command = "30s"
datablock = "1m"
datafinal = "1m"
`, repeatSessions-1, int(fuzzWindow/time.Second), mode&modeNoTerm == 0, fuzzMaxRcpts, fuzzMaxSize)
	b.WriteString("\n[recipients]\nfile = \"recipients\"\naliases = \"aliases\"\n")
	if mode&modeRelay != 0 {
		// Never dialled: the delivery queue does not run here.
		b.WriteString("\n[delivery]\nrelay = \"smtp://192.0.2.200:25\"\n")
	}
	return b.String()
}

// fuzzSession runs one input inside a synctest bubble.
func fuzzSession(t *testing.T, certFile, keyFile string, mode fuzzMode, in []byte) {
	goroutines := runtime.NumGoroutine()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "mxguard.toml")
	for name, content := range map[string]string{
		cfgFile:                          fuzzConfig(mode, certFile, keyFile),
		filepath.Join(dir, "access"):     fuzzAccess,
		filepath.Join(dir, "recipients"): fuzzRecipients,
		filepath.Join(dir, "aliases"):    fuzzAliases,
		filepath.Join(dir, "README.md"):  "not the server's",
	} {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := listFiles(t, dir)
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil { // as serve does
		t.Fatal(err)
	}
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(cfg, logger, WithVerifier(fixedDNS{}))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close() // also when a check fails; closing twice is harmless
	ctx, cancel := context.WithCancel(context.Background())
	client := fuzzClients[mode&modeClient]
	n := 1
	if mode&modeRepeat != 0 {
		n = repeatSessions
	}
	runs := make([]fuzzRun, n)
	for i := range runs {
		nc := newFuzzConn(mode, in, &net.TCPAddr{IP: client.addr.AsSlice(), Port: 40000 + i})
		runs[i].start = time.Now()
		srv.ServeConn(ctx, nc)
		runs[i].out, runs[i].tls = nc.output()
		if !nc.isClosed() {
			t.Fatalf("%s: session %d: ServeConn returned without closing the connection\ninput: %q", mode, i, in)
		}
	}
	cancel()
	if testing.Verbose() {
		for i, r := range runs {
			t.Logf("%s: session %d replied:\n%s", mode, i, r.out)
		}
	}
	c := &fuzzCheck{t: t, mode: mode, client: client, in: in, srv: srv, logs: &logs, dir: dir, dataDir: cfg.DataDir, runs: runs}
	c.replies()
	c.stored()
	if k := srv.admit.Children(); k != 0 {
		c.fail("%d max_daemon_children slots still held after every session ended", k)
	}
	srv.close()
	c.files(before)
	c.logLines()

	// Every goroutine the server started must be gone: in the bubble,
	// Wait returns once the rest are blocked for good.
	synctest.Wait()
	if runtime.NumGoroutine() > goroutines {
		if leaked := leakedGoroutines(); leaked != "" {
			c.fail("goroutines left after the server closed:\n%s", leaked)
		}
	}
}

type fuzzRun struct {
	start time.Time
	out   []byte // what the client received, decrypted
	tls   bool   // the client spoke TLS after a STARTTLS
}

// fuzzConn is the server's side of a connection whose client sends in
// and then closes (or, with stall, goes silent). Deadlines are kept and
// only a read that would wait for the client honours them: in the bubble
// the wait costs no real time.
//
// With a certificate configured, the client behaves as a real one at its
// first STARTTLS: it sends nothing more until it has the reply, and after
// a 220 it speaks TLS (crypto/tls over a net.Pipe) and sends the rest of
// its input encrypted.
type fuzzConn struct {
	mu       sync.Mutex
	in       []byte // what the client sends now
	afterTLS []byte // what it sends after its STARTTLS; nil: no STARTTLS to wait for
	chunk    int    // at most this many octets per Read; 0 = no limit
	polite   bool   // nothing arrives before the server has said something
	stall    bool   // after in, the client is silent rather than gone
	out      bytes.Buffer
	closed   bool
	readDL   time.Time
	writeDL  time.Time
	remote   *net.TCPAddr

	tls     net.Conn      // the server's end of the pipe, once the client speaks TLS
	tlsOut  bytes.Buffer  // what the client read over TLS
	tlsDone chan struct{} // closed when the TLS client has finished
}

func newFuzzConn(mode fuzzMode, in []byte, remote *net.TCPAddr) *fuzzConn {
	c := &fuzzConn{
		in:     in,
		chunk:  chunkSizes[(mode&modeChunk)>>6],
		polite: mode&modePolite != 0,
		stall:  mode&modeStall != 0,
		remote: remote,
	}
	if mode&modeTLS != 0 && mode&modeRawTLS == 0 {
		// Split after the first line the server takes for STARTTLS.
		for i := 0; i < len(in); {
			line, _, found := bytes.Cut(in[i:], []byte("\r\n"))
			if !found {
				break
			}
			i += len(line) + 2
			if cmd, err := smtpd.ParseCommand(string(line)); err == nil && cmd.Verb == "STARTTLS" && cmd.Arg == "" {
				c.in, c.afterTLS = in[:i], in[i:len(in):len(in)]
				break
			}
		}
	}
	return c
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if len(c.in) == 0 && c.afterTLS != nil {
		// The client has sent its STARTTLS, and the server, reading
		// again, has flushed its reply.
		if bytes.HasPrefix(lastLine(c.out.Bytes()), []byte("220 ")) {
			c.startTLS()
		} else {
			c.in, c.afterTLS = c.afterTLS, nil
		}
	}
	if tc := c.tls; tc != nil {
		c.mu.Unlock()
		return tc.Read(p)
	}
	rest := len(c.in)
	if rest > 0 && !(c.polite && c.out.Len() == 0) {
		n := len(p)
		if c.chunk > 0 {
			n = min(n, c.chunk)
		}
		n = copy(p, c.in[:min(n, len(c.in))])
		c.in = c.in[n:]
		c.mu.Unlock()
		return n, nil
	}
	dl := c.readDL
	c.mu.Unlock()
	if rest == 0 && !c.stall || dl.IsZero() {
		return 0, io.EOF // the client closed (or would wait for ever)
	}
	time.Sleep(time.Until(dl))
	return 0, os.ErrDeadlineExceeded
}

// lastLine returns the last CRLF-terminated line of b.
func lastLine(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\r\n"))
	if i := bytes.LastIndex(b, []byte("\r\n")); i >= 0 {
		return b[i+2:]
	}
	return b
}

// startTLS runs the client's side of TLS: the handshake, then the rest of
// the input, while it reads whatever the server says until it closes.
// c.mu is held.
func (c *fuzzConn) startTLS() {
	srv, cli := net.Pipe()
	srv.SetReadDeadline(c.readDL)
	srv.SetWriteDeadline(c.writeDL)
	c.tls, c.tlsDone = srv, make(chan struct{})
	after, chunk, stall := c.afterTLS, c.chunk, c.stall
	c.afterTLS = nil
	tc := tls.Client(cli, &tls.Config{ServerName: fuzzHostname, InsecureSkipVerify: true})
	go func() {
		defer close(c.tlsDone)
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			if tc.Handshake() != nil {
				return
			}
			for len(after) > 0 {
				n := len(after)
				if chunk > 0 {
					n = min(n, chunk)
				}
				if _, err := tc.Write(after[:n]); err != nil {
					return
				}
				after = after[n:]
			}
			if !stall {
				tc.CloseWrite()
			}
		}()
		var got bytes.Buffer
		io.Copy(&got, tc) // until the server closes
		cli.Close()
		<-sent
		c.mu.Lock()
		c.tlsOut.Write(got.Bytes())
		c.mu.Unlock()
	}()
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if tc := c.tls; tc != nil {
		c.mu.Unlock()
		return tc.Write(p)
	}
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.tls != nil {
		c.tls.Close()
	}
	return nil
}

func (c *fuzzConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// output waits for the TLS client, if any, and returns what the client
// received, decrypted, and whether it spoke TLS.
func (c *fuzzConn) output() ([]byte, bool) {
	c.mu.Lock()
	done := c.tlsDone
	c.mu.Unlock()
	if done != nil {
		<-done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append(bytes.Clone(c.out.Bytes()), c.tlsOut.Bytes()...), done != nil
}

func (c *fuzzConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(203, 0, 113, 25), Port: 25}
}
func (c *fuzzConn) RemoteAddr() net.Addr { return c.remote }
func (c *fuzzConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}
func (c *fuzzConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDL = t
	if c.tls != nil {
		return c.tls.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline matters only over TLS: until then writes never wait.
func (c *fuzzConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDL = t
	if c.tls != nil {
		return c.tls.SetWriteDeadline(t)
	}
	return nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fuzzCheck holds what the checks after an input need.
type fuzzCheck struct {
	t       *testing.T
	mode    fuzzMode
	client  fuzzClient
	in      []byte
	srv     *Server
	logs    *lockedBuffer
	dir     string
	dataDir string
	runs    []fuzzRun
	queued  map[string]bool // IDs the server said 250 "queued as" for
}

func (c *fuzzCheck) fail(format string, args ...any) {
	c.t.Helper()
	var out strings.Builder
	for i, r := range c.runs {
		fmt.Fprintf(&out, "session %d replied:\n%s", i, r.out)
	}
	in := c.in
	if len(in) > 2000 {
		in = append(in[:2000:2000], "..."...)
	}
	c.t.Fatalf("%s: %s\ninput (%d octets): %q\n%s\nlog:\n%s", c.mode, fmt.Sprintf(format, args...), len(c.in), in, out.String(), c.logs)
}

var (
	replyLine  = regexp.MustCompile(`^[2-5][0-9][0-9]([ -][\t\x20-\x7e]*)?$`)
	queuedLine = regexp.MustCompile(`^250 2\.0\.0 Ok: queued as ([0-9A-V]{24})$`)
)

// replies checks each session's output: well-formed reply lines of at
// most 512 octets, multi-line replies of one code, the greeting or
// refusal admission promises, and collects the IDs of accepted messages.
func (c *fuzzCheck) replies() {
	c.queued = make(map[string]bool)
	first := c.runs[0].start
	for i, r := range c.runs {
		out := r.out
		var lines []string
		for l := range strings.SplitSeq(strings.TrimSuffix(string(out), "\r\n"), "\r\n") {
			if len(out) > 0 {
				lines = append(lines, l)
			}
		}
		if ready := slices.Index(lines, "220 2.0.0 Ready to start TLS"); ready >= 0 && !r.tls {
			// The client sent plaintext where its TLS handshake belongs;
			// what follows is the server's TLS alert, if anything.
			lines = lines[:ready+1]
		} else if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
			c.fail("session %d: output does not end in CRLF", i)
		}
		cont := "" // the code a multi-line reply continues with
		for j, l := range lines {
			if len(l)+2 > 512 {
				c.fail("session %d: reply line %d is %d octets with CRLF, over RFC 5321's 512", i, j, len(l)+2)
			}
			if !replyLine.MatchString(l) {
				c.fail("session %d: malformed reply line %d: %q", i, j, l)
			}
			if cont != "" && l[:3] != cont {
				c.fail("session %d: reply line %d continues a %s reply with %s", i, j, cont, l[:3])
			}
			cont = ""
			if len(l) > 3 && l[3] == '-' {
				cont = l[:3]
			}
			if m := queuedLine.FindStringSubmatch(l); m != nil {
				if c.queued[m[1]] {
					c.fail("session %d: message ID %s given twice", i, m[1])
				}
				c.queued[m[1]] = true
			}
			if l == "220 2.0.0 Ready to start TLS" && c.mode&modeTLS == 0 {
				c.fail("session %d: STARTTLS accepted without a certificate", i)
			}
			if strings.Contains(l, "Too many open connections") || strings.Contains(l, "Too many concurrent connections") {
				c.fail("session %d: refused for connections that ended before it started: a slot was not given back", i)
			}
		}
		if cont != "" {
			c.fail("session %d: multi-line %s reply never ends", i, cont)
		}
		greeting := ""
		if len(lines) > 0 {
			greeting = lines[0]
		}
		switch {
		case c.client.pause && len(c.in) == 0 && c.mode&modeStall == 0 && len(lines) == 0:
			// The client left during the greeting pause.
		case len(lines) == 0:
			c.fail("session %d: no reply at all, not even a greeting", i)
		case c.client.refused:
			if len(lines) != 1 || greeting[0] != '4' && greeting[0] != '5' {
				c.fail("session %d: a client refused by Connect: got %q", i, lines)
			}
		case i >= 2 && !c.client.trusted && r.start.Sub(first) < fuzzWindow:
			// client_rate is 2 in the window: the third session is over it.
			if c.mode&modeNoTerm == 0 {
				if len(lines) != 1 || greeting != "421 4.3.2 Connection rate limit exceeded." {
					c.fail("session %d: over client_rate with terminate, got %q", i, lines)
				}
			} else if slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "250 2.1.") }) {
				c.fail("session %d: over client_rate without terminate, yet MAIL or RCPT accepted", i)
			}
		case c.client.pause && c.mode&modePolite == 0 && len(c.in) > 0:
			if len(lines) != 1 || greeting != "554 "+fuzzHostname+" not accepting messages" {
				c.fail("session %d: pre-greeting traffic got %q", i, lines)
			}
		default:
			if greeting != "220 "+fuzzHostname+" ESMTP mxguard" {
				c.fail("session %d: greeting %q", i, greeting)
			}
		}
		if len(c.queued) > 0 && c.client.discard {
			c.fail("session %d: a message from a Connect: DISCARD client was queued", i)
		}
	}
}

// storedMsg is a message the server kept: the spool's envelope, or a
// Maildir file's Return-Path and the mailboxes it is in.
type storedMsg struct {
	id    string
	from  string
	rcpts []string
	body  []byte
	where string
}

// stored collects what the server kept and checks it against the policy.
func (c *fuzzCheck) stored() {
	var msgs []storedMsg
	if c.mode&modeRelay != 0 {
		msgs = c.spooled()
	} else {
		msgs = c.maildirs()
		if ids, err := c.srv.spool.Queued(); err != nil || len(ids) > 0 {
			c.fail("local delivery left messages in the spool: %v %v", ids, err)
		}
	}
	seen := make(map[string]bool)
	for _, m := range msgs {
		seen[m.id] = true
		c.checkMsg(m)
	}
	for id := range c.queued {
		if !seen[id] {
			c.fail("message %s got 250 but is stored nowhere", id)
		}
	}
}

func (c *fuzzCheck) spooled() []storedMsg {
	ids, err := c.srv.spool.Queued()
	if err != nil {
		c.fail("spool: %v", err)
	}
	var msgs []storedMsg
	for _, id := range ids {
		env, err := c.srv.spool.Envelope(id)
		if err != nil {
			c.fail("spool: %v", err)
		}
		b, err := c.srv.spool.Body(id)
		if err != nil {
			c.fail("spool: %v", err)
		}
		body, err := io.ReadAll(b)
		b.Close()
		if err != nil {
			c.fail("spool: %v", err)
		}
		m := storedMsg{id: id, from: env.From, body: body, where: "spool " + id}
		for _, r := range env.Rcpts {
			m.rcpts = append(m.rcpts, r.Addr)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// maildirs reads every message under data_dir/mail, which must hold
// <domain>/<local part>/{tmp,new,cur} and nothing else.
func (c *fuzzCheck) maildirs() []storedMsg {
	root := filepath.Join(c.dataDir, "mail")
	byID := make(map[string]*storedMsg)
	var order []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == root {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return nil
		}
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) == 1 && !c.srv.envelope.Load().IsLocal(parts[0]) {
			c.fail("Maildir for domain %q, which is not local", parts[0])
		}
		if len(parts) < 3 && d.IsDir() {
			return nil
		}
		if len(parts) == 3 && d.IsDir() && (parts[2] == "tmp" || parts[2] == "new" || parts[2] == "cur") {
			return nil
		}
		if len(parts) != 4 || d.IsDir() || parts[2] != "new" {
			c.fail("unexpected entry in the Maildir root: %s", rel)
		}
		name := parts[3]
		i := strings.Index(name, ".S")
		if i < 0 || len(name) < i+2+24 {
			c.fail("Maildir file name without a message ID: %s", rel)
		}
		id := name[i+2 : i+2+24]
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// The file is linked into each recipient's Maildir: the sender is
		// in it, the recipient is the directory.
		hdr, body, ok := bytes.Cut(data, []byte("\n"))
		from, okFrom := strings.CutPrefix(string(hdr), "Return-Path: <")
		if !ok || !okFrom || !strings.HasSuffix(from, ">") {
			c.fail("Maildir file %s does not start with Return-Path", rel)
		}
		rcpt := parts[1] + "@" + parts[0]
		m := byID[id]
		if m == nil {
			m = &storedMsg{id: id, from: strings.TrimSuffix(from, ">"), body: body, where: "Maildir " + rel}
			byID[id] = m
			order = append(order, id)
		}
		m.rcpts = append(m.rcpts, rcpt)
		return nil
	})
	if err != nil {
		c.fail("reading the Maildirs: %v", err)
	}
	var msgs []storedMsg
	for _, id := range order {
		msgs = append(msgs, *byID[id])
	}
	return msgs
}

// Addresses of fuzzAccess, normalised by normAddr.
var (
	refusedSenders = []string{"spammer@spam.example"}
	refusedDomains = []string{"angry.example"}
	discardSender  = "bulk@mass.example"
	refusedRcpts   = []string{"closed@example.org", "kevin@example.org", "full@example.org"}
	discardRcpt    = "trash@example.org"
	friends        = []string{"friend@example.org", "postmaster@example.org"}
	relayDomain    = "partner.example"
)

// normAddr is an address as the access map compares it: ASCII lower case,
// no trailing dot, no +detail.
func normAddr(a string) (local, domain string) {
	a = strings.TrimSuffix(asciiLower(a), ".")
	local, domain = a, ""
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		local, domain = a[:i], a[i+1:]
	}
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	return local, domain
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func (c *fuzzCheck) checkMsg(m storedMsg) {
	if !c.queued[m.id] {
		c.fail("%s: message %s stored without a 250 for it", m.where, m.id)
	}
	if c.client.discard || c.client.refused {
		c.fail("%s: message stored from a client that Connect: refuses or discards", m.where)
	}
	fl, fd := normAddr(m.from)
	sender := fl + "@" + fd
	if sender == discardSender {
		c.fail("%s: message from a From: DISCARD sender stored", m.where)
	}
	fromRefused := slices.Contains(refusedSenders, sender) || slices.Contains(refusedDomains, fd)
	for _, r := range m.rcpts {
		l, d := normAddr(r)
		addr := l + "@" + d
		switch {
		case slices.Contains(refusedRcpts, addr):
			c.fail("%s: message for a To: REJECT/ERROR recipient <%s> stored", m.where, r)
		case addr == discardRcpt:
			c.fail("%s: message for a To: DISCARD recipient <%s> stored", m.where, r)
		case fromRefused && !(c.mode&modeDelay != 0 && slices.Contains(friends, addr)):
			c.fail("%s: message from refused sender <%s> stored for <%s>", m.where, m.from, r)
		}
		if d == "mail.example.org" && !slices.Contains(knownAt, strings.Trim(l, `"`)) {
			c.fail("%s: message stored for <%s>, who does not exist", m.where, r)
		}
		if c.client.trusted {
			continue
		}
		if strings.ContainsAny(l, "%!@") {
			c.fail("%s: routing address <%s> accepted from an untrusted client", m.where, r)
		}
		if !c.client.relay && !c.srv.envelope.Load().IsLocal(d) && d != relayDomain && !strings.HasSuffix(d, "."+relayDomain) {
			c.fail("%s: relayed to <%s> for an untrusted client", m.where, r)
		}
	}
	if len(m.rcpts) > fuzzMaxRcpts {
		c.fail("%s: %d recipients, over max_rcpts_per_message", m.where, len(m.rcpts))
	}
	c.checkBody(m)
}

// checkBody checks the message as stored: CRLF lines in the spool, LF
// lines in a Maildir, no NUL, no line over RFC 5321's 1000 octets past
// the headers we add, and not much more than max_message_size.
func (c *fuzzCheck) checkBody(m storedMsg) {
	body := m.body
	if bytes.IndexByte(body, 0) >= 0 {
		c.fail("%s: NUL in a stored message", m.where)
	}
	if len(body) > fuzzMaxSize+2048 {
		c.fail("%s: %d octets stored, max_message_size is %d", m.where, len(body), fuzzMaxSize)
	}
	maildir := c.mode&modeRelay == 0
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			return i + 1, data[:i+1], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	received := true // the Received header's lines are ours, not the client's
	for sc.Scan() {
		line := sc.Bytes()
		text, ok := bytes.CutSuffix(line, []byte("\n"))
		if !ok {
			c.fail("%s: last line %q has no line end", m.where, line)
		}
		if !maildir {
			if text, ok = bytes.CutSuffix(text, []byte("\r")); !ok {
				c.fail("%s: bare LF in a spooled message: %q", m.where, line)
			}
		}
		if bytes.IndexByte(text, '\r') >= 0 {
			c.fail("%s: bare CR in a stored message: %q", m.where, line)
		}
		if received && len(text) > 0 && text[0] != '\t' && !bytes.HasPrefix(text, []byte("Received: ")) {
			received = false
		}
		if !received && len(text) > 998 {
			c.fail("%s: a %d-octet line stored", m.where, len(text))
		}
	}
}

// listFiles lists every file under dir, relative to it.
func listFiles(t *testing.T, dir string) map[string]bool {
	files := make(map[string]bool)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// files checks that the server wrote nowhere but the spool and the
// Maildir root, and that it left no temporary file behind.
func (c *fuzzCheck) files(before map[string]bool) {
	for rel := range listFiles(c.t, c.dir) {
		if before[rel] {
			continue
		}
		parts := strings.Split(rel, string(filepath.Separator))
		ok := parts[0] == "data" && (len(parts) == 1 ||
			parts[1] == "mail" && c.mode&modeRelay == 0 ||
			parts[1] == "spool" && (len(parts) == 2 || parts[2] == "lock" || parts[2] == "queue" || parts[2] == "tmp" && len(parts) == 3 ||
				parts[2] == "log" && (len(parts) == 3 || len(parts) == 4 && strings.HasSuffix(parts[3], ".seg"))))
		if !ok {
			c.fail("file written outside the spool and the Maildirs: %s", rel)
		}
		if parts[0] == "data" && len(parts) == 5 && parts[1] == "mail" && parts[4] == "tmp" {
			if ents, _ := os.ReadDir(filepath.Join(c.dir, rel)); len(ents) > 0 {
				c.fail("Maildir %s keeps a half-written message", rel)
			}
		}
	}
}

// logLines fails on a session panic (smtpd recovers it and logs it), on
// any error logged (nothing a client sends may break storage) and on a
// refusal logged without the client's address, which fail2ban and grep
// key on.
func (c *fuzzCheck) logLines() {
	logs := c.logs.String()
	if strings.Contains(logs, "panic in session") {
		c.fail("a session panicked")
	}
	for l := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(l, "level=ERROR") {
			c.fail("error logged: %s", l)
		}
		if strings.Contains(l, " reason=") && !strings.Contains(l, " ip="+c.client.addr.String()) {
			c.fail("refusal logged without ip=: %s", l)
		}
	}
}

// leakedGoroutines returns the stacks of the goroutines of this synctest
// bubble other than the caller: those the server started. The fuzzing
// engine's own goroutines, outside the bubble, come and go as they like.
func leakedGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if i == 0 || !strings.Contains(header, "synctest bubble") ||
			strings.Contains(g, "internal/synctest.Run(") || strings.Contains(g, "testing/synctest.") {
			continue // this goroutine, one outside the bubble, or synctest's own
		}
		out = append(out, g)
	}
	return strings.Join(out, "\n\n")
}

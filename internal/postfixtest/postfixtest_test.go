package postfixtest

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSMTP holds a raw SMTP conversation: a known user is accepted at
// RCPT, an unknown one of a hosted domain gets Postfix's permanent
// "User unknown" from loopback too, another domain is not relayed, RSET
// works, and a message for a known user lands in its Maildir and no one
// else's.
func TestSMTP(t *testing.T) {
	s := Start(t, Options{Users: []string{"alice@example.test", "Bob@Example.test"}})
	c := dial(t, s.Addr)
	c.expect(t, "EHLO client.test", 250, "")
	c.expect(t, "MAIL FROM:<>", 250, "2.1.0")
	c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
	c.expect(t, "RCPT TO:<bob@example.test>", 250, "2.1.5")
	c.expect(t, "RCPT TO:<nobody-here@example.test>", 550,
		"5.1.1 <nobody-here@example.test>: Recipient address rejected: User unknown in virtual mailbox table")
	c.expect(t, "RCPT TO:<alice@other.test>", 554, "5.7.1 <alice@other.test>: Relay access denied")
	c.expect(t, "RSET", 250, "2.0.0")

	c.expect(t, "MAIL FROM:<sender@client.test>", 250, "2.1.0")
	c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
	c.expect(t, "DATA", 354, "")
	c.expect(t, "Subject: first\r\n\r\nhello\r\n.", 250, "2.0.0 Ok: queued")
	c.expect(t, "MAIL FROM:<>", 250, "2.1.0")
	c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
	c.expect(t, "DATA", 354, "")
	c.expect(t, "Subject: second\r\n\r\nagain\r\n.", 250, "2.0.0 Ok: queued")
	c.expect(t, "QUIT", 221, "")

	msgs := s.WaitMessages("alice@example.test", 2)
	if len(msgs) != 2 {
		t.Fatalf("alice has %d messages, want 2", len(msgs))
	}
	all := msgs[0] + msgs[1]
	for _, want := range []string{"Subject: first", "Subject: second", "Return-Path: <sender@client.test>", "Delivered-To: alice@example.test", "hello"} {
		if !strings.Contains(all, want) {
			t.Errorf("delivered messages lack %q:\n%s", want, all)
		}
	}
	if msgs := s.Messages("bob@example.test"); len(msgs) != 0 {
		t.Errorf("bob got %d messages, want none", len(msgs))
	}
	if _, err := os.Stat(filepath.Join(s.Maildir("alice@example.test"), "new")); err != nil {
		t.Errorf("Maildir(alice): %v", err)
	}
}

// TestDomains: Options.Domains hosts a domain that has no user yet (every
// address of it is unknown) and refuses a user outside them.
func TestDomains(t *testing.T) {
	s := Start(t, Options{Domains: []string{"example.test", "empty.test"}, Users: []string{"alice@example.test"}})
	c := dial(t, s.Addr)
	c.expect(t, "EHLO client.test", 250, "")
	c.expect(t, "MAIL FROM:<>", 250, "")
	c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
	c.expect(t, "RCPT TO:<alice@empty.test>", 550, "5.1.1 <alice@empty.test>: Recipient address rejected: User unknown")

	r := run(t, func(tb testing.TB) {
		Start(tb, Options{Domains: []string{"example.test"}, Users: []string{"alice@other.test"}})
	})
	if !strings.Contains(r.fatal, `"alice@other.test" is not in one of Options.Domains`) {
		t.Errorf("user outside Domains: Fatal %q", r.fatal)
	}
}

// TestMainOverrides: Options.Main changes what Postfix answers, here a temporary
// refusal of unknown users.
func TestMainOverrides(t *testing.T) {
	s := Start(t, Options{Users: []string{"alice@example.test"}, Main: map[string]string{
		"unknown_virtual_mailbox_reject_code": "450",
		"smtpd_banner":                        "$myhostname ESMTP postfixtest",
	}})
	c := dial(t, s.Addr)
	c.expect(t, "EHLO client.test", 250, "")
	c.expect(t, "MAIL FROM:<>", 250, "")
	c.expect(t, "RCPT TO:<nobody-here@example.test>", 450, "4.1.1 <nobody-here@example.test>: Recipient address rejected: User unknown")
	if strings.Contains(s.Maillog(), "overriding earlier entry") {
		t.Errorf("main.cf has a parameter twice:\n%s", s.Maillog())
	}
}

// TestLoopbackNotExempt: a client on loopback gets anvil's limits like any
// other, as smtpd_client_event_limit_exceptions is empty.
func TestLoopbackNotExempt(t *testing.T) {
	s := Start(t, Options{Users: []string{"alice@example.test"}, Main: map[string]string{
		"smtpd_client_connection_count_limit": "1",
	}})
	first := dial(t, s.Addr)
	first.expect(t, "EHLO client.test", 250, "")
	nc, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	code, msg, err := textproto.NewConn(nc).ReadResponse(0)
	if err != nil || code != 421 || !strings.Contains(msg, "too many connections") {
		t.Errorf("second connection from loopback: %d %s (%v), want 421 too many connections", code, msg, err)
	}
}

// TestAwkwardTestNames: the instance works whatever the test is called,
// here subtests that Go names "x" and "x#01", and a long name with
// characters main.cf gives a meaning.
func TestAwkwardTestNames(t *testing.T) {
	for _, name := range []string{"x", "x", ",$(x) #" + strings.Repeat("long", 30)} {
		t.Run(name, func(t *testing.T) {
			s := Start(t, Options{Users: []string{"alice@example.test"}})
			c := dial(t, s.Addr)
			c.expect(t, "EHLO client.test", 250, "")
			c.expect(t, "MAIL FROM:<>", 250, "")
			c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
			c.expect(t, "RCPT TO:<bob@example.test>", 550, "5.1.1")
			c.expect(t, "DATA", 354, "")
			c.expect(t, "Subject: x\r\n\r\nx\r\n.", 250, "2.0.0")
			s.WaitMessages("alice@example.test", 1)
		})
	}
}

// TestTwoInstances: two instances run at once, each on its own address and
// directory, each knowing only its own users.
func TestTwoInstances(t *testing.T) {
	a := Start(t, Options{Users: []string{"alice@example.test"}})
	b := Start(t, Options{Users: []string{"bob@example.test"}})
	if a.Addr == b.Addr || a.Dir == b.Dir || a.master == b.master {
		t.Fatalf("instances share an address, directory or master: %+v %+v", a, b)
	}
	for _, tc := range []struct {
		s          *Server
		known, not string
	}{
		{a, "alice@example.test", "bob@example.test"},
		{b, "bob@example.test", "alice@example.test"},
	} {
		c := dial(t, tc.s.Addr)
		c.expect(t, "EHLO client.test", 250, "")
		c.expect(t, "MAIL FROM:<>", 250, "")
		c.expect(t, "RCPT TO:<"+tc.known+">", 250, "2.1.5")
		c.expect(t, "RCPT TO:<"+tc.not+">", 550, "5.1.1")
		c.expect(t, "DATA", 354, "")
		c.expect(t, "Subject: to "+tc.known+"\r\n\r\nhi\r\n.", 250, "2.0.0")
		c.expect(t, "QUIT", 221, "")
		msgs := tc.s.WaitMessages(tc.known, 1)
		if len(msgs) != 1 || !strings.Contains(msgs[0], "Subject: to "+tc.known) {
			t.Errorf("%s: %q", tc.known, msgs)
		}
	}
}

// TestListensOnlyOnAddr: the instance has no TCP listener but Addr: not
// 25, not 587, no postscreen.
func TestListensOnlyOnAddr(t *testing.T) {
	s := Start(t, Options{Users: []string{"alice@example.test"}})
	c := dial(t, s.Addr) // an smtpd process, too
	c.expect(t, "EHLO client.test", 250, "")
	procs, err := sessionProcesses(s.master)
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) < 3 {
		t.Fatalf("session %d has %v: want the master, qmgr, pickup and smtpd", s.master, procs)
	}
	got := listeningPorts(t, procs)
	if len(got) != 1 || got[0] != s.Addr {
		t.Errorf("postfix listens on %v, want only %s", got, s.Addr)
	}
}

// TestStopLeavesNothing: when the test ends no Postfix process is left,
// Addr refuses connections and the instance's directory is gone; Stop in
// the middle of a test does the same.
func TestStopLeavesNothing(t *testing.T) {
	var s *Server
	var master int
	t.Run("instance", func(t *testing.T) {
		s = Start(t, Options{Users: []string{"alice@example.test"}})
		master = s.master
		c := dial(t, s.Addr) // a connection open at the end, with an smtpd
		c.expect(t, "EHLO client.test", 250, "")
	})
	if left, err := sessionProcesses(master); err != nil || len(left) != 0 {
		t.Errorf("after the test: processes %v left in session %d (%v)", left, master, err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("after the test: %s still accepts connections", s.Addr)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("after the test: %s: %v, want it gone", s.Dir, err)
	}

	s = Start(t, Options{Users: []string{"alice@example.test"}})
	master = s.master
	s.Stop()
	s.Stop() // a second Stop is harmless
	if left, err := sessionProcesses(master); err != nil || len(left) != 0 {
		t.Errorf("after Stop: processes %v left in session %d (%v)", left, master, err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("after Stop: %s still accepts connections", s.Addr)
	}
}

// TestMissingProgram: without Postfix the test fails, naming the Debian
// package to install.
func TestMissingProgram(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "postfix")
	r := run(t, func(tb testing.TB) { start(tb, Options{Users: []string{"alice@example.test"}}, missing) })
	if r.fatal == "" {
		t.Fatalf("no Fatal (skip: %q)", r.skip)
	}
	if !strings.Contains(r.fatal, "Debian package postfix") || !strings.Contains(r.fatal, missing) {
		t.Errorf("%q does not name the program and the Debian package", r.fatal)
	}
}

// TestFailedStart: a Postfix that cannot start fails the test with the
// maillog, where Postfix says why.
func TestFailedStart(t *testing.T) {
	r := run(t, func(tb testing.TB) {
		Start(tb, Options{Users: []string{"alice@example.test"}, Main: map[string]string{"inet_interfaces": "192.0.2.1"}})
	})
	if !strings.Contains(r.fatal, "--- maillog") || !strings.Contains(r.fatal, "192.0.2.1") {
		t.Errorf("Fatal %q does not show the maillog", r.fatal)
	}
}

// TestBadOptions: what would break the map, main.cf or a path fails the
// test at Start, naming it.
func TestBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "no domain"},
		{Options{Users: []string{"alice"}}, `"alice"`},
		{Options{Users: []string{"@example.test"}}, `"@example.test"`},
		{Options{Users: []string{"a b@example.test"}}, `"a b@example.test"`},
		{Options{Users: []string{"a/b@example.test"}}, `"a/b@example.test"`},
		{Options{Domains: []string{"a b"}}, `"a b"`},
		{Options{Users: []string{"alice@example.test"}, Main: map[string]string{"biff": "no\nrelayhost = x"}}, `"biff"`},
	} {
		r := run(t, func(tb testing.TB) { Start(tb, tc.opts) })
		if !strings.Contains(r.fatal, tc.want) {
			t.Errorf("%+v: Fatal %q, want %s named", tc.opts, r.fatal, tc.want)
		}
	}
}

// smtpClient is a raw SMTP client: one command, one reply.
type smtpClient struct {
	*textproto.Conn
}

func dial(t *testing.T, addr string) *smtpClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c := &smtpClient{textproto.NewConn(nc)}
	t.Cleanup(func() { c.Close() })
	if code, msg, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %d %s: %v", code, msg, err)
	}
	return c
}

// expect sends cmd and wants code and a reply text that begins with want.
func (c *smtpClient) expect(t *testing.T, cmd string, code int, want string) {
	t.Helper()
	if err := c.PrintfLine("%s", cmd); err != nil {
		t.Fatal(err)
	}
	got, msg, err := c.ReadResponse(0)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if got != code || !strings.HasPrefix(msg, want) {
		t.Fatalf("%s: got %d %s, want %d %s...", firstLine(cmd), got, msg, code, want)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// listeningPorts returns the TCP addresses (ip:port) that any of pids
// listens on, matching their sockets' inodes in /proc/net/tcp and tcp6.
func listeningPorts(t *testing.T, pids []int) []string {
	t.Helper()
	inodes := map[string]bool{}
	for _, pid := range pids {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // gone since
		}
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	var addrs []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			addrs = append(addrs, hexAddr(t, fields[1]))
		}
		f.Close()
	}
	return addrs
}

// hexAddr turns /proc/net/tcp's "0100007F:1F90" into "127.0.0.1:8080".
func hexAddr(t *testing.T, s string) string {
	t.Helper()
	h, p, _ := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	if len(h) != 8 {
		return "[" + h + "]:" + strconv.FormatUint(port, 10) // IPv6: any is wrong here
	}
	ip, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	// The kernel prints the address in host (little-endian) order.
	return fmt.Sprintf("%d.%d.%d.%d:%d", ip&0xff, ip>>8&0xff, ip>>16&0xff, ip>>24, port)
}

// recorder stands in for the test to observe Fatal and Skip without ending
// the real test.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder in a goroutine of its own, as Fatalf ends
// it, and in a subtest, so that what f registered with Cleanup has run when
// run returns.
func run(t *testing.T, f func(testing.TB)) *recorder {
	t.Helper()
	var r *recorder
	t.Run("recorded", func(t *testing.T) {
		r = &recorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			f(r)
		}()
		<-done
	})
	return r
}

// TestDeliveredBefore: Maildir names order by their time, whose
// microseconds are not padded, not as strings.
func TestDeliveredBefore(t *testing.T) {
	ordered := []string{
		"1795915487.Vfe00I986030M99999.vm",
		"1795915487.Vfe00I986029M100000.vm",
		"1795915487.M100001P5391.host",
		"1795915488.Vfe00I1M5.vm",
	}
	for i := range ordered {
		for j := range ordered {
			if got := deliveredBefore(ordered[i], ordered[j]); got != (i < j) {
				t.Errorf("deliveredBefore(%q, %q) = %v", ordered[i], ordered[j], got)
			}
		}
	}
}

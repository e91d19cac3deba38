package dovecottest

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

// TestLMTP holds a raw LMTP conversation on each listener: a known user is
// accepted at RCPT, an unknown one gets Dovecot's permanent refusal, RSET
// works, and a message for a known user lands in its Maildir and no one
// else's.
func TestLMTP(t *testing.T) {
	s := Start(t, Options{Users: []string{"alice@example.test", "Bob@Example.test"}})
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := s.Addr
			if network == "unix" {
				addr = s.Socket
			}
			c := dial(t, network, addr)
			c.expect(t, "LHLO client.test", 250, "")
			c.expect(t, "MAIL FROM:<>", 250, "2.1.0")
			c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
			c.expect(t, "RCPT TO:<bob@example.test>", 250, "2.1.5")
			c.expect(t, "RCPT TO:<nobody-here@example.test>", 550,
				"5.1.1 <nobody-here@example.test> User doesn't exist: nobody-here@example.test")
			// A domain the userdb has no user of is refused the same way.
			c.expect(t, "RCPT TO:<alice@other.test>", 550, "5.1.1")
			c.expect(t, "RSET", 250, "2.0.0")

			before := len(s.Messages("alice@example.test"))
			subject := "delivered over " + network
			c.expect(t, "MAIL FROM:<sender@client.test>", 250, "2.1.0")
			c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
			c.expect(t, "DATA", 354, "")
			// LMTP answers once per accepted recipient.
			c.expect(t, "Subject: "+subject+"\r\n\r\nhello\r\n.", 250, "2.0.0 <alice@example.test>")
			c.expect(t, "QUIT", 221, "")

			msgs := s.Messages("alice@example.test")
			if len(msgs) != before+1 {
				t.Fatalf("alice has %d messages, want %d:\n%s", len(msgs), before+1, s.Log())
			}
			got := msgs[len(msgs)-1]
			for _, want := range []string{"Subject: " + subject, "Return-Path: <sender@client.test>", "hello"} {
				if !strings.Contains(got, want) {
					t.Errorf("delivered message lacks %q:\n%s", want, got)
				}
			}
		})
	}
	if msgs := s.Messages("bob@example.test"); len(msgs) != 0 {
		t.Errorf("bob got %d messages, want none", len(msgs))
	}
	if _, err := os.Stat(filepath.Join(s.Maildir("alice@example.test"), "new")); err != nil {
		t.Errorf("Maildir(alice): %v", err)
	}
}

// TestAwkwardTestNames: the instance works whatever the test is called,
// here subtests that Go names "x" and "x#01", and a long name.
func TestAwkwardTestNames(t *testing.T) {
	for _, name := range []string{"x", "x", ",$(x) #" + strings.Repeat("long", 30)} {
		t.Run(name, func(t *testing.T) {
			s := Start(t, Options{Users: []string{"alice@example.test"}})
			for _, na := range [][2]string{{"tcp", s.Addr}, {"unix", s.Socket}} {
				c := dial(t, na[0], na[1])
				c.expect(t, "LHLO client.test", 250, "")
				c.expect(t, "MAIL FROM:<>", 250, "")
				c.expect(t, "RCPT TO:<alice@example.test>", 250, "2.1.5")
				c.expect(t, "RCPT TO:<bob@example.test>", 550, "5.1.1")
				c.expect(t, "DATA", 354, "")
				c.expect(t, "Subject: x\r\n\r\nx\r\n.", 250, "2.0.0")
			}
			if n := len(s.Messages("alice@example.test")); n != 2 {
				t.Errorf("alice has %d messages, want 2", n)
			}
		})
	}
}

// TestTwoInstances: two instances run at once, on their own addresses and
// sockets, each knowing only its own users.
func TestTwoInstances(t *testing.T) {
	a := Start(t, Options{Users: []string{"alice@example.test"}})
	b := Start(t, Options{Users: []string{"bob@example.test"}})
	if a.Addr == b.Addr || a.Socket == b.Socket || a.Dir == b.Dir {
		t.Fatalf("instances share an address, socket or directory: %+v %+v", a, b)
	}
	for _, tc := range []struct {
		s           *Server
		known, not  string
		description string
	}{
		{a, "alice@example.test", "bob@example.test", "a"},
		{b, "bob@example.test", "alice@example.test", "b"},
	} {
		c := dial(t, "tcp", tc.s.Addr)
		c.expect(t, "LHLO client.test", 250, "")
		c.expect(t, "MAIL FROM:<>", 250, "")
		c.expect(t, "RCPT TO:<"+tc.known+">", 250, "2.1.5")
		c.expect(t, "RCPT TO:<"+tc.not+">", 550, "5.1.1")
		c.expect(t, "QUIT", 221, "")
	}
}

// TestListensOnlyOnAddr: the instance has no TCP listener but Addr, so
// neither the imap, pop3 and submission ports nor any auth or doveadm
// port is taken.
func TestListensOnlyOnAddr(t *testing.T) {
	s := Start(t, Options{Users: []string{"alice@example.test"}})
	procs, err := groupProcesses(s.pid())
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) < 2 {
		t.Fatalf("process group %d has %v: want the master and its children", s.pid(), procs)
	}
	got := listeningPorts(t, procs)
	_, port, _ := net.SplitHostPort(s.Addr)
	if len(got) != 1 || got[0] != "127.0.0.1:"+port {
		t.Errorf("dovecot listens on %v, want only %s", got, s.Addr)
	}
}

// TestStopLeavesNothing: when the test ends no Dovecot process is left,
// Addr and Socket refuse connections, and its directory is gone.
// Stop in the middle of a test does the same.
func TestStopLeavesNothing(t *testing.T) {
	var s *Server
	var pgid int
	t.Run("instance", func(t *testing.T) {
		s = Start(t, Options{Users: []string{"alice@example.test"}})
		pgid = s.pid()
		c := dial(t, "tcp", s.Addr) // a connection open at the end, with an lmtp process
		c.expect(t, "LHLO client.test", 250, "")
	})
	if left, err := groupProcesses(pgid); err != nil || len(left) != 0 {
		t.Errorf("after the test: processes %v left in group %d (%v)", left, pgid, err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Errorf("after the test: %s still accepts connections", s.Addr)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("after the test: %s: %v, want it gone", s.Dir, err)
	}

	s = Start(t, Options{Users: []string{"alice@example.test"}})
	pgid = s.pid()
	s.Stop()
	s.Stop() // a second Stop is harmless
	if left, err := groupProcesses(pgid); err != nil || len(left) != 0 {
		t.Errorf("after Stop: processes %v left in group %d (%v)", left, pgid, err)
	}
	for _, na := range [][2]string{{"tcp", s.Addr}, {"unix", s.Socket}} {
		if c, err := net.DialTimeout(na[0], na[1], time.Second); err == nil {
			c.Close()
			t.Errorf("after Stop: %s still accepts connections", na[1])
		}
	}
}

// TestMissingProgram: without Dovecot the test fails, naming the Debian
// package to install.
func TestMissingProgram(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, bin := range []binaries{
		{dovecot: missing, lmtp: lmtpPath},
		{dovecot: dovecotPath, lmtp: missing},
	} {
		r := run(t, func(tb testing.TB) { start(tb, Options{}, bin) })
		if r.fatal == "" {
			t.Fatalf("%+v: no Fatal (skip: %q)", bin, r.skip)
		}
		if !strings.Contains(r.fatal, "Debian package dovecot-lmtpd") || !strings.Contains(r.fatal, missing) {
			t.Errorf("%+v: %q does not name the program and the Debian package", bin, r.fatal)
		}
	}
}

// TestFailedStart: a Dovecot that refuses its configuration fails the test
// with Dovecot's own words.
func TestFailedStart(t *testing.T) {
	r := run(t, func(tb testing.TB) {
		Start(tb, Options{Users: []string{"alice@example.test"}, Config: "no_such_setting = 1\n"})
	})
	if !strings.Contains(r.fatal, "no_such_setting") {
		t.Errorf("Fatal %q does not show Dovecot's complaint", r.fatal)
	}
}

// TestBadUser: an address that is not local@domain, or that would break
// the passwd-file, fails the test at Start.
func TestBadUser(t *testing.T) {
	for _, u := range []string{"alice", "@example.test", "alice@", "a:b@example.test", "a/b@example.test", "a b@example.test"} {
		r := run(t, func(tb testing.TB) { Start(tb, Options{Users: []string{u}}) })
		if !strings.Contains(r.fatal, strconv.Quote(u)) {
			t.Errorf("user %q: Fatal %q, want it named", u, r.fatal)
		}
	}
}

// lmtpClient is a raw LMTP client: one command, one reply (or one per
// recipient after DATA).
type lmtpClient struct {
	*textproto.Conn
}

func dial(t *testing.T, network, addr string) *lmtpClient {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c := &lmtpClient{textproto.NewConn(nc)}
	t.Cleanup(func() { c.Close() })
	if code, msg, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %d %s: %v", code, msg, err)
	}
	return c
}

// expect sends cmd and wants code and a reply text that begins with want.
func (c *lmtpClient) expect(t *testing.T, cmd string, code int, want string) {
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

// pid is the master's pid, which is also its process group.
func (s *Server) pid() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
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
		"1795917737.M99999P5391.dovecottest.localhost,S=300,W=310",
		"1795917737.M100000P5391.dovecottest.localhost,S=300,W=310",
		"1795917737.Vfe00I9M100001.vm",
		"1795917738.M5P1.host",
	}
	for i := range ordered {
		for j := range ordered {
			if got := deliveredBefore(ordered[i], ordered[j]); got != (i < j) {
				t.Errorf("deliveredBefore(%q, %q) = %v", ordered[i], ordered[j], got)
			}
		}
	}
}

package e2e

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/dnstest"
)

// repoRoot is the module's root directory, where testdata/seed lives.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		t.Fatal("go env GOMOD: not inside the module")
	}
	return filepath.Dir(mod)
}

// hostsDNS starts a DNS server on loopback that maps each address to its
// name and back (forward-confirmed, as a real dial-up pool's zone does).
func hostsDNS(t *testing.T, hosts map[string]string) *dnstest.Server {
	t.Helper()
	var rrs []string
	for ip, name := range hosts {
		a := netip.MustParseAddr(ip).As4()
		rrs = append(rrs,
			fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa. 60 IN PTR %s.", a[3], a[2], a[1], a[0], name),
			fmt.Sprintf("%s. 60 IN A %s", name, ip))
	}
	return dnstest.Start(t, rrs...)
}

// startMXLoopback is startMX with a resolver of its own on loopback that
// knows no names, so that the server's reverse lookups of its 127.0.0.x
// clients are answered at once and never leave the machine (the system
// resolver may be anywhere).
func startMXLoopback(t *testing.T, toml string) *mx {
	t.Helper()
	return startMX(t, fmt.Sprintf("resolver = %q\n", dnstest.Start(t).Addr)+toml)
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// greet connects from src and reads the first reply (the greeting or a
// rejection), reporting how long that took from the start of the dial.
func greet(t *testing.T, src, addr string) (*client, string, time.Duration) {
	t.Helper()
	start := time.Now()
	c := rawClient(t, src, addr)
	line := c.reply()
	return c, line, time.Since(start)
}

// greeting is one connection's first reply and when it came.
type greeting struct {
	c    *client
	line string
	at   time.Time
}

// greetAll opens one connection from each source address at the same time
// and returns a function that waits for every first reply.
func greetAll(t *testing.T, addr string, srcs []string) (wait func() []greeting) {
	t.Helper()
	out := make([]greeting, len(srcs))
	var wg sync.WaitGroup
	for i, src := range srcs {
		c := rawClient(t, src, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := c.br.ReadString('\n')
			if err != nil {
				line = "EOF: " + err.Error()
			}
			out[i] = greeting{c: c, line: strings.TrimRight(line, "\r\n"), at: time.Now()}
		}()
	}
	return func() []greeting {
		wg.Wait()
		return out
	}
}

// quit ends a session politely and waits for the server to close it.
func (c *client) quit() {
	c.t.Helper()
	expect(c.t, c.cmd("QUIT"), "221")
	if got := c.reply(); !strings.HasPrefix(got, "EOF") {
		c.t.Fatalf("after QUIT got %q, want the connection closed", got)
	}
}

// closed checks that the server has closed the connection (nothing more to
// read but EOF).
func (c *client) closed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := c.reply(); !strings.HasPrefix(got, "EOF") || strings.Contains(got, "timeout") {
		c.t.Fatalf("got %q, want the server to close the connection", got)
	}
}

// mxctl runs an mxguard subcommand against this server's configuration.
func (m *mx) mxctl(args ...string) (string, error) {
	m.t.Helper()
	full := append([]string{args[0], "--config", m.config}, args[1:]...)
	out, err := exec.Command(binary, full...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// waitAdmitted waits until the server holds exactly n admitted connections
// (`mxguard status`), so that a test does not race the server's bookkeeping
// of connections it has just closed.
func (m *mx) waitAdmitted(n int) {
	m.t.Helper()
	want := fmt.Sprintf(", %d admitted now", n)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond) // status is a question, not an event: ask again
	defer tick.Stop()
	var out string
	for time.Now().Before(deadline) {
		var err error
		if out, err = m.mxctl("status"); err != nil {
			m.t.Fatalf("mxguard status: %v: %s", err, out)
		}
		if first, _, _ := strings.Cut(out, "\n"); strings.HasSuffix(first, want) {
			return
		}
		<-tick.C
	}
	m.t.Fatalf("mxguard status = %q after 10s, want %d admitted", out, n)
}

// waitLogAll waits for a log line that contains every one of subs.
func (m *mx) waitLogAll(d time.Duration, subs ...string) string {
	m.t.Helper()
	return m.waitLogFrom(0, d, subs...)
}

// waitLogFrom is waitLogAll for the lines after the first from bytes of
// the log.
func (m *mx) waitLogFrom(from int, d time.Duration, subs ...string) string {
	m.t.Helper()
	deadline := time.After(d)
	for {
		m.mu.Lock()
		logs, ch := m.log.String()[from:], m.logCond
		m.mu.Unlock()
		sc := bufio.NewScanner(strings.NewReader(logs))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
	lines:
		for sc.Scan() {
			for _, s := range subs {
				if !strings.Contains(sc.Text(), s) {
					continue lines
				}
			}
			return sc.Text()
		}
		select {
		case <-ch:
		case <-m.exited:
			m.t.Fatalf("mxguard exited while waiting for a line with %q; log:\n%s", subs, m.logs())
		case <-deadline:
			m.t.Fatalf("no log line with all of %q after %v; log:\n%s", subs, d, m.logs())
		}
	}
}

// logCount counts the log lines that contain s.
func (m *mx) logCount(s string) int {
	return strings.Count(m.logs(), s)
}

// waitLogCount waits (10 s at most) until n log lines contain s; the log
// is written in batches, a little after the event.
func (m *mx) waitLogCount(s string, n int) {
	m.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		m.mu.Lock()
		got, ch := strings.Count(m.log.String(), s), m.logCond
		m.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			m.t.Fatalf("%d log lines with %q after 10s, want %d", got, s, n)
		}
	}
}

// hup sends SIGHUP and waits until one more log line contains want (the
// reload's outcome).
func (m *mx) hup(want string) {
	m.t.Helper()
	before := m.logCount(want)
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		m.t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		m.mu.Lock()
		n, ch := strings.Count(m.log.String(), want), m.logCond
		m.mu.Unlock()
		if n > before {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			m.t.Fatalf("no new %q in the log 10s after SIGHUP; log:\n%s", want, m.logs())
		}
	}
}

// restart stops the server gracefully and starts it again on the same
// configuration and data directory.
func (m *mx) restart() {
	m.t.Helper()
	m.stop()
	m.mu.Lock()
	before := m.log.String()
	m.log.Reset() // start waits for a fresh "listening"
	m.mu.Unlock()
	m.t.Cleanup(func() {
		if m.t.Failed() {
			m.t.Logf("mxguard log before the restart:\n%s", before)
		}
	})
	m.start()
}

// addrs returns n source addresses 127.a.b.c counting up from first.
func addrs(first string, n int) []string {
	a := netip.MustParseAddr(first)
	out := make([]string, n)
	for i := range out {
		out[i] = a.String()
		a = a.Next()
	}
	return out
}

// Package e2e runs the real mxguard binary against real clients (Go's
// net/smtp, Python's smtplib, swaks) on loopback. Clients bind to distinct
// 127.0.0.x source addresses to act as distinct hosts.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/smtp"
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

// binary is the mxguard command built once for all tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mxguard-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mxguard")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/mxguard/mxguard/cmd/mxguard").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building mxguard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// mx is one running mxguard process.
type mx struct {
	t       *testing.T
	dir     string // data_dir and config live here
	config  string
	addr    string
	cmd     *exec.Cmd
	mu      sync.Mutex
	log     strings.Builder
	logCond chan struct{} // closed and renewed on every log line
	exited  chan struct{}
}

// startMX writes a config (the given TOML plus listen, data_dir and
// hostname unless they are set) and starts mxguard serve on it.
func startMX(t *testing.T, toml string) *mx {
	t.Helper()
	dir := t.TempDir()
	m := &mx{t: t, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	var pre strings.Builder
	if !strings.Contains(toml, "listen") {
		fmt.Fprintf(&pre, "listen = [%q]\n", m.addr)
	}
	if !strings.Contains(toml, "data_dir") {
		fmt.Fprintf(&pre, "data_dir = %q\n", filepath.Join(dir, "data"))
	}
	if !strings.Contains(toml, "hostname") {
		pre.WriteString("hostname = \"mx.test\"\n")
	}
	if !strings.Contains(toml, "resolver") {
		// A DNS server of our own, so that no query leaves the machine.
		fmt.Fprintf(&pre, "resolver = %q\n", dnstest.Start(t).Addr)
	}
	m.config = filepath.Join(dir, "mxguard.toml")
	if err := os.WriteFile(m.config, []byte(pre.String()+toml), 0o644); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(m.stop)
	return m
}

func (m *mx) start() {
	m.t.Helper()
	cmd := exec.Command(binary, "serve", "--config", m.config)
	cmd.Dir = m.dir
	m.startCmd(cmd)
}

func (m *mx) startCmd(cmd *exec.Cmd) {
	m.t.Helper()
	m.cmd = cmd
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	m.mu.Lock()
	m.logCond = make(chan struct{})
	m.mu.Unlock()
	m.exited = make(chan struct{})
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			m.mu.Lock()
			m.log.WriteString(sc.Text() + "\n")
			close(m.logCond)
			m.logCond = make(chan struct{})
			m.mu.Unlock()
		}
		m.cmd.Wait()
		close(m.exited)
	}()
	m.waitLog("listening", 10*time.Second)
}

// stop ends the process gracefully (SIGTERM) and fails the test if it
// does not stop in time.
func (m *mx) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(40 * time.Second):
		m.cmd.Process.Kill()
		m.t.Errorf("mxguard did not stop on SIGTERM; log:\n%s", m.logs())
	}
	if m.t.Failed() {
		m.t.Logf("mxguard log:\n%s", m.logs())
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (m *mx) kill() {
	m.cmd.Process.Kill()
	<-m.exited
}

func (m *mx) logs() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// waitLog waits until the log contains s.
func (m *mx) waitLog(s string, d time.Duration) string {
	m.t.Helper()
	return m.waitLogAll(d, s)
}

// dialFrom connects to addr from the local address src (127.0.0.x).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// client is a raw SMTP conversation for tests that need exact replies.
type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func rawClient(t *testing.T, src, addr string) *client {
	c := dialFrom(t, src, addr)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// reply reads one whole (possibly multi-line) reply and returns its last line.
func (c *client) reply() string {
	c.t.Helper()
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return "EOF: " + err.Error()
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (c *client) cmd(line string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.c, line+"\r\n"); err != nil {
		return "EOF: " + err.Error()
	}
	return c.reply()
}

// expect checks that got starts with want.
func expect(t *testing.T, got, want string) {
	t.Helper()
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// sendGo sends one message with Go's net/smtp from src.
func sendGo(t *testing.T, src, addr, from string, to []string, body string) error {
	t.Helper()
	return sendOn(dialFrom(t, src, addr), "client.test", from, to, body)
}

// maildirFiles lists the messages in new/ of a Maildir.
func maildirFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	return files
}

// waitMaildir waits until the Maildir holds n messages and returns them.
func waitMaildir(t *testing.T, m *mx, dir string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond) // delivery is asynchronous: poll the directory
	defer tick.Stop()
	for {
		files := maildirFiles(t, dir)
		if len(files) >= n {
			if len(files) > n {
				t.Fatalf("%d messages in %s, want %d", len(files), dir, n)
			}
			return files
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d messages in %s after 20s, want %d; log:\n%s", len(files), dir, n, m.logs())
		case <-tick.C:
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sendQuiet is sendGo for goroutines: errors are returned, never reported.
// It greets as "localhost", what net/smtp says when not told otherwise.
func sendQuiet(addr, from string, to []string, body string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return sendOn(c, "localhost", from, to, body)
}

// sendOn sends one message with Go's net/smtp over c, greeting with helo.
func sendOn(c net.Conn, helo, from string, to []string, body string) error {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sc, err := smtp.NewClient(c, "mx.test")
	if err != nil {
		return err
	}
	defer sc.Close()
	if err := sc.Hello(helo); err != nil {
		return err
	}
	if err := sc.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := sc.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := sc.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return sc.Quit()
}

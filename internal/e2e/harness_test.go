// Package e2e runs the real mxguard binary against real clients (Go's
// net/smtp, Python's smtplib, swaks) on loopback. Clients bind to distinct
// 127.0.0.x source addresses to act as distinct hosts.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/dnstest"
)

// binary is the mxguard command built once for all tests.
var binary string

// Environment of the test binary.
const (
	// raceEnv=0 builds mxguard without the race detector, for quick local
	// runs; by default (and in CI) every server runs as a -race build.
	raceEnv = "MXGUARD_E2E_RACE"
	// binaryEnv names an mxguard already built, for a test that runs this
	// test binary again in a namespace of its own (see inNetNS).
	binaryEnv = "MXGUARD_E2E_BINARY"
)

func TestMain(m *testing.M) {
	if binary = os.Getenv(binaryEnv); binary != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "mxguard-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mxguard")
	args := []string{"build", "-o", binary}
	if os.Getenv(raceEnv) != "0" {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "github.com/mxguard/mxguard/cmd/mxguard")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building mxguard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need returns the path of the program name, and fails the test, naming
// the Debian package that provides it, when it is not installed: a test
// that skipped instead would let CI pass on a machine that tests nothing.
func need(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: install the Debian package %s (./test.sh does): %v", name, debianPackage, err)
	}
	return path
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

	// The current run (one process; restarts make new runs), for checking
	// how it ended.
	waitErr error // cmd.Wait's result, set before exited is closed
	killed  bool  // ended by kill: a non-zero exit is expected
	logFrom int   // where the run's lines start in log
	json    bool  // log_format = "json"
	checked bool  // its end has been checked
}

// startMX writes a config (the given TOML plus listen, data_dir and
// hostname unless they are set) and starts mxguard serve on it.
func startMX(t *testing.T, toml string) *mx {
	t.Helper()
	dir := t.TempDir()
	m := &mx{t: t, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), json: strings.Contains(toml, `log_format = "json"`)}
	var pre strings.Builder
	// Port 0: the kernel picks a free port as the server binds it, so that
	// no other process can take it in between. The port it got is then
	// written into the config, for restarts.
	const anyPort = `listen = ["127.0.0.1:0"]` + "\n"
	top := toml // the top-level keys: what comes before the first [table]
	if i := tableHeader.FindStringIndex(toml); i != nil {
		top = toml[:i[0]]
	}
	ownListen := !listenKey.MatchString(top)
	if ownListen {
		pre.WriteString(anyPort)
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
	conf := pre.String() + toml
	if !recipientsTable.MatchString(toml) {
		// Tests of other things send to whatever local part they like;
		// the recipient tests set [recipients] themselves.
		conf += "\n[recipients]\ncatch_all = true\n"
	}
	if err := os.WriteFile(m.config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(m.stop)
	if ownListen {
		m.addr = m.listenAddr()
		conf = strings.Replace(conf, anyPort, fmt.Sprintf("listen = [%q]\n", m.addr), 1)
		if err := os.WriteFile(m.config, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

var (
	recipientsTable = regexp.MustCompile(`(?m)^\[recipients\]`)
	listenKey       = regexp.MustCompile(`(?m)^listen\s*=`)
	tableHeader     = regexp.MustCompile(`(?m)^\[`)
)

// listenAddr is the address the server said it listens on, for a listen
// address with port 0.
func (m *mx) listenAddr() string {
	m.t.Helper()
	sub := listenAddrRE.FindStringSubmatch(m.waitLog(m.listening(), 0))
	if sub == nil {
		m.t.Fatalf("no address in the listening line; log:\n%s", m.logs())
	}
	return sub[1]
}

var listenAddrRE = regexp.MustCompile(`(?:msg=listening addr=|"msg":"listening","addr":")([^"\s]+)`)

// listening is what the "listening" line holds in the run's log format.
func (m *mx) listening() string {
	if m.json {
		return `"msg":"listening"`
	}
	return "msg=listening"
}

func (m *mx) start() {
	m.t.Helper()
	cmd := exec.Command(binary, "serve", "--config", m.config)
	cmd.Dir = m.dir
	m.startCmd(cmd)
}

// startCmd starts cmd as the server's next run, after checking how the
// previous one ended, and waits until it listens.
func (m *mx) startCmd(cmd *exec.Cmd) {
	m.t.Helper()
	if m.cmd != nil {
		m.report()
	}
	m.cmd = cmd
	if m.cmd.Env == nil {
		m.cmd.Env = os.Environ()
	}
	// A race report goes to stderr, which is the log here, and the
	// process exits 66 in the end, whatever GORACE the tests were run with.
	// Reports are written as races happen; the race runtime's wait for
	// late ones at exit (1s by default) would only slow every stop.
	m.cmd.Env = append(m.cmd.Env, "GORACE=exitcode=66 atexit_sleep_ms=50")
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	m.mu.Lock()
	m.logCond = make(chan struct{})
	m.logFrom = m.log.Len()
	m.mu.Unlock()
	m.exited = make(chan struct{})
	m.waitErr, m.killed, m.checked = nil, false, false
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
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	m.waitLogFrom(m.logFrom, 10*time.Second, m.listening())
}

// stop ends the process gracefully (SIGTERM), unless it has ended already,
// and fails the test if it does not stop in time or ends badly (see
// problems).
func (m *mx) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	m.halt()
	m.report()
	if m.t.Failed() {
		m.t.Logf("mxguard log:\n%s", m.logs())
	}
}

// halt sends SIGTERM, unless the process has ended already, and waits
// until it has.
func (m *mx) halt() {
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(40 * time.Second):
		m.t.Errorf("mxguard did not stop within 40s of SIGTERM")
		m.kill()
	}
}

// kill ends the process with SIGKILL, as a crash would. A process that
// has ended already keeps its own exit status, to be checked.
func (m *mx) kill() {
	select {
	case <-m.exited:
	default:
		m.killed = true
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// report fails the test with the problems of the run that has ended.
func (m *mx) report() {
	m.t.Helper()
	for _, p := range m.problems() {
		m.t.Errorf("mxguard (pid %d) %s", m.cmd.Process.Pid, p)
	}
}

// problems says, once per run, how the ended run went wrong: a non-zero
// exit (unless kill ended it: a graceful stop exits 0), or signs of a
// crash in its log.
func (m *mx) problems() []string {
	select {
	case <-m.exited:
	default:
		return nil // still running
	}
	if m.checked {
		return nil
	}
	m.checked = true
	m.mu.Lock()
	log := m.log.String()[m.logFrom:]
	m.mu.Unlock()
	var out []string
	if m.waitErr != nil && !m.killed {
		p := "exited with " + m.waitErr.Error()
		if ee, ok := m.waitErr.(*exec.ExitError); ok && ee.ExitCode() == 66 {
			p += " (the race detector's exit code)"
		}
		out = append(out, p)
	}
	for _, s := range crashSigns {
		if line := s.re.FindString(log); line != "" {
			if len(line) > 300 { // the session's panic line holds a whole stack
				line = line[:300] + "..."
			}
			out = append(out, fmt.Sprintf("logged %s: %q", s.what, line))
		}
	}
	return out
}

// crashSigns are what a Go program writes when it fails in ways a test may
// not otherwise notice: the session's recovered panic keeps the server up,
// and a race report changes nothing until the exit status.
var crashSigns = []struct {
	re   *regexp.Regexp
	what string
}{
	{regexp.MustCompile(`(?m)^WARNING: DATA RACE$`), "a data race"},
	{regexp.MustCompile(`(?m)^(panic|fatal error): .*$`), "a Go panic"},
	{regexp.MustCompile(`(?m)^goroutine \d+ \[.*$`), "a goroutine trace"},
	{regexp.MustCompile(`(?m)^.*(msg="panic in session"|"msg":"panic in session").*$`), "a panic in a session"},
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

// netnsEnv marks this test binary as run again by inNetNS.
const netnsEnv = "MXGUARD_E2E_NETNS"

// inNetNS reports whether the test runs in a network namespace of its own,
// with only a loopback interface, where any fixed port is free. When it
// does not, inNetNS runs the test again in such a namespace (a child of
// this test binary, with the same mxguard) and returns false: the test then
// returns at once, its outcome being the child's.
//
// Creating the namespace takes root (CAP_SYS_ADMIN), or unprivileged user
// namespaces; without either the test fails and says so, rather than
// depend on the port being free on this machine.
func inNetNS(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		ip := need(t, "ip", "iproute2")
		if out, err := exec.Command(ip, "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("bringing up lo in the new network namespace: %v\n%s", err, out)
		}
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=4m")
	cmd.Env = append(os.Environ(), netnsEnv+"=1", binaryEnv+"="+binary)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if uid := os.Geteuid(); uid != 0 {
		// As root of a user namespace of its own, a user may create a
		// network namespace, where the kernel allows that.
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s runs in a network namespace of its own, so that the port it needs is free whatever else runs here; "+
			"creating one failed: %v. It needs root (CAP_SYS_ADMIN) or unprivileged user namespaces", t.Name(), err)
	}
	err := cmd.Wait()
	if err != nil || !strings.Contains(out.String(), "--- PASS: "+t.Name()+" ") {
		t.Fatalf("%s in its own network namespace: %v\n%s", t.Name(), err, out.String())
	}
	t.Logf("in its own network namespace:\n%s", out.String())
	return false
}

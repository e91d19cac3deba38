package postfixtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// postfixPath is where Debian's postfix package installs the postfix
// command.
const postfixPath = "/usr/sbin/postfix"

const (
	// startTimeout bounds postfix start and the wait for smtpd's greeting.
	// A start takes well under a second when the machine is idle, a few
	// seconds when it is loaded.
	startTimeout = 30 * time.Second
	// stopTimeout bounds postfix stop (whose script waits up to 5 s before
	// it kills), then separately the wait for the processes to be gone.
	stopTimeout = 20 * time.Second
	// deliveryTimeout bounds WaitMessages.
	deliveryTimeout = 20 * time.Second
)

// Options say what the instance hosts.
type Options struct {
	// Domains are the domains hosted; "" takes the domains of Users.
	Domains []string
	// Users are the only valid recipients, such as "alice@example.test";
	// every other address of Domains gets 550 5.1.1 at RCPT, and every
	// address of another domain 554 5.7.1. Postfix compares them without
	// regard to case. Each must be in one of Domains.
	Users []string
	// Main adds main.cf parameters, or overrides the package's own.
	Main map[string]string
}

// Server is one running Postfix instance. Its methods must be called from
// the test's goroutine, like t.Fatal.
type Server struct {
	// Addr is smtpd's host:port on 127.0.0.1.
	Addr string
	// Dir is the instance's directory: etc (config_directory), spool
	// (queue_directory), data (data_directory), mail (the Maildirs) and
	// maillog.
	Dir string

	t       testing.TB
	bin     string
	users   map[string]bool
	running bool
	master  int // pid of the master daemon, leader of its session
}

// Start starts a Postfix instance that hosts opts.Domains with opts.Users,
// waits until smtpd greets on Addr, and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	return start(t, opts, postfixPath)
}

func start(t testing.TB, opts Options, bin string) *Server {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("postfixtest: %s is not installed: install the Debian package postfix (./test.sh does): %v", bin, err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("postfixtest: Postfix must be started as root (euid %d)", os.Geteuid())
	}
	owner, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("postfixtest: no user postfix, which the Debian package postfix creates when it is installed: %v", err)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	domains, users, err := hosted(opts)
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	for k, v := range opts.Main {
		if k == "" || strings.ContainsAny(k, " \t\r\n=#") || strings.ContainsAny(v, "\r\n") {
			t.Fatalf("postfixtest: Options.Main: %q = %q is not one main.cf parameter", k, v)
		}
	}

	dir, err := tempDir(t, "postfixtest-")
	if err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	s := &Server{Dir: dir, t: t, bin: bin, users: users}
	if err := s.layout(owner, nobody, users); err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	t.Cleanup(s.Stop)
	// A failing test shows the maillog; it runs before Stop.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfixtest: maillog of the instance on %s:\n%s", s.Addr, s.Maillog())
		}
	})

	var lastErr error
	for range 3 {
		s.Addr, err = freeAddr()
		if err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
		if err := s.writeConfig(nobody, domains, opts.Main); err != nil {
			t.Fatalf("postfixtest: %v", err)
		}
		lastErr = s.start()
		if lastErr == nil {
			return s
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("postfixtest: %v", lastErr)
	return nil
}

// hosted checks Options and returns the hosted domains and the users, both
// in lower case.
func hosted(opts Options) (domains []string, users map[string]bool, err error) {
	doms := map[string]bool{}
	for _, d := range opts.Domains {
		if d == "" || strings.ContainsAny(d, "@/\\:,\"' \t\r\n") {
			return nil, nil, fmt.Errorf("Options.Domains: %q is not a domain", d)
		}
		doms[strings.ToLower(d)] = true
	}
	users = map[string]bool{}
	for _, u := range opts.Users {
		local, domain, ok := strings.Cut(strings.ToLower(u), "@")
		if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
			return nil, nil, fmt.Errorf("Options.Users: %q is not local@domain", u)
		}
		if strings.ContainsAny(u, "/\\:,\"' \t\r\n") || local == "." || local == ".." {
			return nil, nil, fmt.Errorf("Options.Users: %q has a character a map or a path cannot hold", u)
		}
		if len(opts.Domains) == 0 {
			doms[domain] = true
		} else if !doms[domain] {
			return nil, nil, fmt.Errorf("Options.Users: %q is not in one of Options.Domains %q", u, opts.Domains)
		}
		users[local+"@"+domain] = true
	}
	if len(doms) == 0 {
		return nil, nil, errors.New("no domain: give Options.Domains or Options.Users")
	}
	return sortedKeys(doms), users, nil
}

// tempDir makes the instance's directory, readable by all (nobody must
// reach the Maildirs in it), and removes it when the test ends, after Stop
// (cleanups run last registered first). It is not t.TempDir: a test's name
// becomes part of that path, and a subtest named "a,b" or "$x" would break
// main.cf (a list, an expansion) or the postfix-script.
func tempDir(t testing.TB, prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("%s: %v", prefix, err)
		}
	})
	if strings.ContainsAny(dir, " \t,\"'\\$") {
		return "", fmt.Errorf("temporary directory %q (TMPDIR) has a character main.cf cannot hold", dir)
	}
	return dir, os.Chmod(dir, 0o755)
}

// layout creates the instance's directories and its mailbox map.
func (s *Server) layout(owner, nobody *user.User, users map[string]bool) error {
	own := func(path string, u *user.User) error {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return os.Chown(path, uid, gid)
	}
	for _, d := range []string{"etc", "spool", "data", "mail"} {
		if err := os.Mkdir(filepath.Join(s.Dir, d), 0o755); err != nil {
			return err
		}
		// Chmod: Mkdir's mode is filtered by the umask.
		if err := os.Chmod(filepath.Join(s.Dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := own(filepath.Join(s.Dir, "data"), owner); err != nil {
		return err
	}
	if err := own(filepath.Join(s.Dir, "mail"), nobody); err != nil {
		return err
	}
	var b strings.Builder
	for _, u := range sortedKeys(users) {
		// A value ending in / is a Maildir, relative to virtual_mailbox_base.
		fmt.Fprintf(&b, "%s\t%s/\n", u, mailboxPath(u))
	}
	return os.WriteFile(filepath.Join(s.Dir, "etc", "virtual_mailbox"), []byte(b.String()), 0o644)
}

// mailboxPath is user's Maildir relative to the mail directory:
// <domain>/<user>.
func mailboxPath(user string) string {
	_, domain, _ := strings.Cut(user, "@")
	return filepath.Join(domain, user)
}

// writeConfig writes main.cf and master.cf for s.Addr. The reasons for
// each setting are in the package documentation.
func (s *Server) writeConfig(nobody *user.User, domains []string, extra map[string]string) error {
	etc := filepath.Join(s.Dir, "etc")
	params := [][2]string{
		{"compatibility_level", "3.6"},
		{"queue_directory", filepath.Join(s.Dir, "spool")},
		{"data_directory", filepath.Join(s.Dir, "data")},
		{"maillog_file", filepath.Join(s.Dir, "maillog")},
		{"maillog_file_prefixes", s.Dir},
		{"myhostname", "postfixtest.localhost"},
		{"mydomain", "localhost"},
		{"myorigin", "$myhostname"},
		{"inet_interfaces", "127.0.0.1"},
		{"inet_protocols", "ipv4"},
		{"mynetworks", "127.0.0.0/8"},
		{"smtpd_client_event_limit_exceptions", ""},
		{"mydestination", ""},
		{"local_recipient_maps", ""},
		{"alias_maps", ""},
		{"alias_database", ""},
		{"relayhost", ""},
		{"default_transport", "error:postfixtest delivers nothing outside"},
		{"relay_transport", "error:postfixtest delivers nothing outside"},
		{"smtpd_relay_restrictions", "reject_unauth_destination"},
		{"virtual_mailbox_domains", strings.Join(domains, ", ")},
		{"virtual_mailbox_maps", "texthash:" + filepath.Join(etc, "virtual_mailbox")},
		{"virtual_mailbox_base", filepath.Join(s.Dir, "mail")},
		{"virtual_uid_maps", "static:" + nobody.Uid},
		{"virtual_gid_maps", "static:" + nobody.Gid},
		{"smtpd_peername_lookup", "no"},
		{"smtpd_tls_security_level", "none"},
		{"smtp_tls_security_level", "none"},
		{"biff", "no"},
	}
	seen := map[string]bool{}
	for i, p := range params {
		if v, ok := extra[p[0]]; ok {
			params[i][1] = v
		}
		seen[p[0]] = true
	}
	for _, k := range sortedKeys(extra) {
		if !seen[k] {
			params = append(params, [2]string{k, extra[k]})
		}
	}
	var main strings.Builder
	main.WriteString("# Written by mxguard's internal/postfixtest for one test.\n")
	for _, p := range params {
		fmt.Fprintf(&main, "%s = %s\n", p[0], p[1])
	}
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(main.String()), 0o644); err != nil {
		return err
	}
	master := "# Written by mxguard's internal/postfixtest for one test.\n" +
		"# service type  private unpriv  chroot  wakeup  maxproc command\n" +
		s.Addr + " inet n - n - - smtpd\n" + `pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(master), 0o644); err != nil {
		return err
	}
	// Postfix reads a file modified in the last second or so again and
	// again, 0.3 s apart, until it has settled: about 2 s for each start.
	// The files are complete; date them back.
	past := time.Now().Add(-time.Minute)
	for _, name := range []string{"main.cf", "master.cf", "virtual_mailbox"} {
		if err := os.Chtimes(filepath.Join(etc, name), past, past); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := s.postfix(ctx, "start")
	if err != nil {
		// A master that died on the way may have left children.
		s.readMaster()
		s.reap()
		return fmt.Errorf("postfix -c %s start: %v\n%s%s--- maillog\n%s", s.configDir(), err, out, s.diagnose(), s.Maillog())
	}
	s.running = true
	if err := s.readMaster(); err != nil {
		return err
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := greets(s.Addr)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			s.stop()
			return fmt.Errorf("smtpd on %s did not greet within %v: %v\n--- maillog\n%s", s.Addr, startTimeout, err, s.Maillog())
		case <-tick.C:
		}
	}
}

func (s *Server) configDir() string { return filepath.Join(s.Dir, "etc") }

// postfix runs the postfix command on the instance.
func (s *Server) postfix(ctx context.Context, command string) ([]byte, error) {
	return exec.CommandContext(ctx, s.bin, "-c", s.configDir(), command).CombinedOutput()
}

// diagnose runs postfix check with its stderr on a terminal, for a start
// that failed: the postfix command reports an error it finds before it
// knows where to log (a bad main.cf parameter) on its stderr when that is a
// terminal, and nowhere else.
func (s *Server) diagnose() string {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := runOnTerminal(ctx, s.bin, "-c", s.configDir(), "check")
	if err != nil && out == "" {
		out = err.Error() + "\n"
	}
	if out == "" {
		return ""
	}
	return "--- postfix -c " + s.configDir() + " check\n" + out
}

// runOnTerminal runs a command with its stderr on a new pseudo-terminal
// and returns what it wrote to stdout and stderr.
func runOnTerminal(ctx context.Context, name string, args ...string) (string, error) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return "", err
	}
	defer ptmx.Close()
	// Through SyscallConn, not Fd, which would make ptmx blocking and its
	// read deadline useless.
	raw, err := ptmx.SyscallConn()
	if err != nil {
		return "", err
	}
	var n uint32
	var ioctlErr error
	err = raw.Control(func(fd uintptr) {
		if ioctlErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioctlErr == nil {
			n, ioctlErr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
		}
	})
	if err == nil {
		err = ioctlErr
	}
	if err != nil {
		return "", fmt.Errorf("pseudo-terminal: %w", err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return "", err
	}
	var stdout strings.Builder
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = pts
	runErr := cmd.Run()
	pts.Close()
	// The terminal holds what was written until it is read; with no writer
	// left a read ends in EIO. The deadline covers a writer that lingers.
	_ = ptmx.SetReadDeadline(time.Now().Add(time.Second))
	stderr, _ := io.ReadAll(ptmx)
	out := stdout.String() + strings.ReplaceAll(string(stderr), "\r\n", "\n")
	return out, runErr
}

// readMaster reads the master's pid from its pid file.
func (s *Server) readMaster() error {
	b, err := os.ReadFile(filepath.Join(s.Dir, "spool", "pid", "master.pid"))
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("master.pid: %w", err)
	}
	s.master = pid
	return nil
}

// greets dials addr and expects SMTP's 220 greeting.
func greets(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220 ") {
		return fmt.Errorf("%s greeted %q", addr, line)
	}
	_, err = c.Write([]byte("QUIT\r\n"))
	return err
}

// Stop stops the instance with postfix stop and waits until none of its
// processes is left; connections to Addr are then refused. It is
// idempotent and also runs when the test ends.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.stop(); err != nil {
		s.t.Errorf("postfixtest: %v\n--- maillog\n%s", err, s.Maillog())
	}
}

func (s *Server) stop() error {
	if !s.running {
		return nil
	}
	s.running = false
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	out, err := s.postfix(ctx, "stop")
	if err := s.reap(); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("postfix -c %s stop: %v\n%s", s.configDir(), err, out)
	}
	return nil
}

// reap waits until no process of the master's session is left, and kills
// what is still there after a while: the master stops its children with
// SIGTERM as it exits, and they may outlive it for a moment.
func (s *Server) reap() error {
	if s.master == 0 {
		return nil
	}
	deadline := time.Now().Add(stopTimeout)
	killed := false
	for {
		left, err := sessionProcesses(s.master)
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if killed {
				return fmt.Errorf("postfix processes %v still running after SIGKILL", left)
			}
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			killed = true
			deadline = time.Now().Add(stopTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sessionProcesses lists the live (not zombie) processes of session sid,
// from /proc.
func sessionProcesses(sid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone since ReadDir
		}
		// pid (comm) state ppid pgrp session ...; comm may hold spaces and ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if id, _ := strconv.Atoi(f[3]); id == sid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Maillog returns the instance's log so far.
func (s *Server) Maillog() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "maillog"))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Maildir returns the path of user's Maildir. Postfix creates it at the
// first delivery.
func (s *Server) Maildir(user string) string {
	return filepath.Join(s.Dir, "mail", mailboxPath(strings.ToLower(user)))
}

// Messages returns the messages delivered to user so far, as Postfix
// stored them (with its Return-Path:, Delivered-To: and Received: on top),
// in the order of the delivery time in their Maildir file names, to the
// microsecond. A user Start was not given fails the test.
func (s *Server) Messages(user string) []string {
	s.t.Helper()
	if !s.users[strings.ToLower(user)] {
		s.t.Fatalf("postfixtest: Messages(%q): not one of Options.Users", user)
	}
	msgs, err := readMaildir(s.Maildir(user))
	if err != nil {
		s.t.Fatalf("postfixtest: %v", err)
	}
	return msgs
}

// WaitMessages waits, a bounded time, until user has at least n messages,
// and returns them all. Postfix delivers after it has answered DATA.
func (s *Server) WaitMessages(user string, n int) []string {
	s.t.Helper()
	deadline := time.Now().Add(deliveryTimeout)
	for {
		msgs := s.Messages(user)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("postfixtest: %s has %d messages after %v, want %d\n--- maillog\n%s",
				user, len(msgs), deliveryTimeout, n, s.Maillog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readMaildir reads the messages in a Maildir's new and cur. A Maildir
// not yet created holds none.
func readMaildir(dir string) ([]string, error) {
	var files []string
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(sub, e.Name()))
			}
		}
	}
	sort.SliceStable(files, func(i, j int) bool {
		return deliveredBefore(filepath.Base(files[i]), filepath.Base(files[j]))
	})
	msgs := make([]string, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, string(b))
	}
	return msgs, nil
}

// deliveredBefore orders Maildir file names by the delivery time they
// begin with, "<seconds>.", and the microseconds in the part after it,
// "M<usec>" (Dovecot: "M<usec>P<pid>", Postfix: "V<dev>I<inode>M<usec>").
// The microseconds are not padded, so the names do not sort as strings.
func deliveredBefore(a, b string) bool {
	as, au := deliveryTime(a)
	bs, bu := deliveryTime(b)
	if as != bs {
		return as < bs
	}
	if au != bu {
		return au < bu
	}
	return a < b
}

func deliveryTime(name string) (sec, usec int64) {
	first, rest, _ := strings.Cut(name, ".")
	sec, _ = strconv.ParseInt(first, 10, 64)
	unique, _, _ := strings.Cut(rest, ".")
	if i := strings.LastIndexByte(unique, 'M'); i >= 0 {
		digits := unique[i+1:]
		end := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' })
		if end >= 0 {
			digits = digits[:end]
		}
		usec, _ = strconv.ParseInt(digits, 10, 64)
	}
	return sec, usec
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

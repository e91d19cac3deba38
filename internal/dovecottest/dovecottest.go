package dovecottest

import (
	"bufio"
	"errors"
	"fmt"
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
	"text/template"
	"time"
)

// Where Debian's dovecot-core and dovecot-lmtpd install the programs.
const (
	dovecotPath = "/usr/sbin/dovecot"
	lmtpPath    = "/usr/lib/dovecot/lmtp"
)

const (
	// startTimeout bounds how long the instance may take to greet on both
	// listeners. It starts in well under a second; the rest is margin for
	// a loaded machine.
	startTimeout = 15 * time.Second
	// stopTimeout bounds the wait for its processes to be gone once killed.
	stopTimeout = 10 * time.Second
)

// Options say what the instance knows.
type Options struct {
	// Users are the addresses LMTP accepts, such as "alice@example.test";
	// every other address gets 550 5.1.1 at RCPT. Dovecot compares them
	// without regard to case.
	Users []string
	// Config is appended to the generated dovecot.conf, for a test that
	// wants Dovecot to behave otherwise (a later setting overrides an
	// earlier one).
	Config string
}

// Server is one running Dovecot instance. Its methods must be called from
// the test's goroutine, like t.Fatal.
type Server struct {
	// Addr is the LMTP listener's host:port on 127.0.0.1.
	Addr string
	// Socket is the path of the LMTP unix socket.
	Socket string
	// Dir is the instance's directory: dovecot.conf, users, the log, and
	// mail/<user>/Maildir.
	Dir string

	t       testing.TB
	bin     string
	runDir  string
	users   map[string]bool
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error         // set before exited is closed
}

// binaries are the programs start needs; a test of the missing-program
// failure passes paths that do not exist.
type binaries struct{ dovecot, lmtp string }

// Start starts a Dovecot instance that knows opts.Users, waits until it
// greets on Addr and on Socket, and kills it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	return start(t, opts, binaries{dovecot: dovecotPath, lmtp: lmtpPath})
}

func start(t testing.TB, opts Options, bin binaries) *Server {
	t.Helper()
	for _, p := range []string{bin.dovecot, bin.lmtp} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("dovecottest: %s is not installed: install the Debian package dovecot-lmtpd, which pulls dovecot-core (./test.sh does): %v", p, err)
		}
	}
	for _, name := range []string{"dovecot", "dovenull"} {
		if _, err := user.Lookup(name); err != nil {
			t.Fatalf("dovecottest: no user %s, which the Debian package dovecot-core creates when it is installed: %v", name, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatalf("dovecottest: Dovecot must be started as root here, to deliver as nobody (euid %d)", os.Geteuid())
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	users := make(map[string]bool, len(opts.Users))
	for _, u := range opts.Users {
		if err := checkUser(u); err != nil {
			t.Fatalf("dovecottest: Options.Users: %v", err)
		}
		users[strings.ToLower(u)] = true
	}

	dir, err := tempDir(t, "dovecottest-")
	if err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	runDir := filepath.Join(dir, "run")

	s := &Server{
		Socket: filepath.Join(runDir, "lmtp"),
		Dir:    dir,
		t:      t,
		bin:    bin.dovecot,
		runDir: runDir,
		users:  users,
	}
	if err := s.writeUsers(nobody); err != nil {
		t.Fatalf("dovecottest: %v", err)
	}
	t.Cleanup(s.Stop)
	// A failing test shows what Dovecot said; it runs before Stop.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecottest: log of the instance on %s:\n%s", s.Addr, s.log())
		}
	})

	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := s.writeConfig(nobody, opts.Config); err != nil {
			t.Fatalf("dovecottest: %v", err)
		}
		lastErr = s.start()
		if lastErr == nil {
			return s
		}
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("dovecottest: %v", lastErr)
	return nil
}

// tempDir makes the instance's directory, readable by all (nobody must
// reach the Maildirs in it), and removes it when the test ends, after Stop
// (cleanups run last registered first). It is not t.TempDir: a test's name
// becomes part of that path, and a subtest's "#01" would start a comment
// in dovecot.conf, and a long name would leave no room in the 108 bytes
// of a unix socket's path.
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
	if strings.ContainsAny(dir, " \t\"'\\#") {
		return "", fmt.Errorf("temporary directory %q (TMPDIR) has a character dovecot.conf cannot hold unquoted", dir)
	}
	return dir, os.Chmod(dir, 0o755)
}

// checkUser refuses what would break the passwd-file line or the Maildir
// path, so that a typo fails here and not as an unknown user.
func checkUser(u string) error {
	local, domain, ok := strings.Cut(u, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") {
		return fmt.Errorf("%q is not local@domain", u)
	}
	if strings.ContainsAny(u, ":/\\\"' \t\r\n") || u == "." || u == ".." {
		return fmt.Errorf("%q has a character a passwd-file line or a path cannot hold", u)
	}
	return nil
}

// writeUsers writes the passwd-file and creates each user's home, owned by
// nobody, who must create the Maildir in it.
func (s *Server) writeUsers(nobody *user.User) error {
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	mail := filepath.Join(s.Dir, "mail")
	if err := os.Mkdir(mail, 0o755); err != nil {
		return err
	}
	// Chmod: Mkdir's mode is filtered by the umask.
	if err := os.Chmod(mail, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	for _, u := range sortedKeys(s.users) {
		home := filepath.Join(mail, u)
		if err := os.Mkdir(home, 0o700); err != nil {
			return err
		}
		if err := os.Chown(home, uid, gid); err != nil {
			return err
		}
		// user:password:uid:gid:gecos:home:shell:extra
		fmt.Fprintf(&b, "%s:{CRYPT}*:%d:%d::%s::\n", u, uid, gid, home)
	}
	return os.WriteFile(filepath.Join(s.Dir, "users"), []byte(b.String()), 0o644)
}

// The reasons for each setting are in the package documentation.
var confTemplate = template.Must(template.New("dovecot.conf").Parse(`# Written by mxguard's internal/dovecottest for one test.
base_dir = {{.RunDir}}
state_dir = {{.Dir}}/state
log_path = {{.Dir}}/dovecot.log
instance_name = dovecottest
hostname = dovecottest.localhost
protocols = lmtp
listen = 127.0.0.1
ssl = no
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = {{.UID}}
last_valid_uid = {{.UID}}
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = {{.Dir}}/users
}
userdb {
  driver = passwd-file
  args = {{.Dir}}/users
}
service lmtp {
  inet_listener lmtp {
    address = {{.Host}}
    port = {{.Port}}
  }
  unix_listener lmtp {
    mode = 0666
  }
}
{{.Extra}}
`))

func (s *Server) writeConfig(nobody *user.User, extra string) error {
	host, port, _ := net.SplitHostPort(s.Addr)
	var b strings.Builder
	err := confTemplate.Execute(&b, map[string]string{
		"RunDir": s.runDir,
		"Dir":    s.Dir,
		"UID":    nobody.Uid,
		"Host":   host,
		"Port":   port,
		"Extra":  extra,
	})
	if err != nil {
		return err
	}
	return os.WriteFile(s.confPath(), []byte(b.String()), 0o644)
}

func (s *Server) confPath() string { return filepath.Join(s.Dir, "dovecot.conf") }

func (s *Server) start() error {
	stderr, err := os.Create(filepath.Join(s.Dir, "dovecot.stderr"))
	if err != nil {
		return err
	}
	defer stderr.Close()
	cmd := exec.Command(s.bin, "-F", "-c", s.confPath())
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	// Its own process group, so that Stop reaches every Dovecot process
	// with one signal and can tell when all are gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func(exited chan struct{}) {
		s.waitErr = cmd.Wait()
		close(exited)
	}(s.exited)

	deadline := time.Now().Add(startTimeout)
	for {
		err := greets("tcp", s.Addr)
		if err == nil {
			err = greets("unix", s.Socket)
		}
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			s.cmd = nil
			s.killGroup(cmd.Process.Pid)
			return fmt.Errorf("dovecot -F -c %s exited (%v):\n%s", s.confPath(), s.waitErr, s.log())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("dovecot on %s did not greet within %v: %v\n%s", s.Addr, startTimeout, err, s.log())
		}
	}
}

// greets dials addr and expects LMTP's 220 greeting.
func greets(network, addr string) error {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
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

// Stop kills the instance, as a crash would, and waits until none of its
// processes is left; LMTP connections are then refused. It is idempotent
// and also runs when the test ends.
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.kill(); err != nil {
		s.t.Errorf("dovecottest: %v", err)
	}
}

func (s *Server) kill() error {
	if s.cmd == nil {
		return nil
	}
	pid := s.cmd.Process.Pid
	s.cmd = nil
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-s.exited
	return s.killGroup(pid)
}

// killGroup kills what is left of the process group pgid, if anything, and
// waits until it is gone: children of a master that died may outlive it
// for a moment.
func (s *Server) killGroup(pgid int) error {
	deadline := time.Now().Add(stopTimeout)
	for {
		left, err := groupProcesses(pgid)
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dovecot processes %v still running %v after SIGKILL", left, stopTimeout)
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
}

// groupProcesses lists the live (not zombie) processes in process group
// pgid, from /proc.
func groupProcesses(pgid int) ([]int, error) {
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
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Log returns Dovecot's log and what it wrote to stderr, for a failure
// message.
func (s *Server) Log() string {
	return s.log()
}

func (s *Server) log() string {
	var b strings.Builder
	for _, name := range []string{"dovecot.stderr", "dovecot.log"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, name))
		if errors.Is(err, os.ErrNotExist) || (err == nil && len(data) == 0) {
			continue
		}
		fmt.Fprintf(&b, "--- %s\n", name)
		if err != nil {
			fmt.Fprintf(&b, "%v\n", err)
			continue
		}
		b.Write(data)
	}
	return b.String()
}

// Maildir returns the path of user's Maildir. Dovecot creates it at the
// first delivery.
func (s *Server) Maildir(user string) string {
	return filepath.Join(s.Dir, "mail", strings.ToLower(user), "Maildir")
}

// Messages returns the messages delivered to user so far, as Dovecot
// stored them (with its Return-Path: and Received: on top), in the order
// of the delivery time in their Maildir file names, to the microsecond. A
// user Start was not given fails the test.
func (s *Server) Messages(user string) []string {
	s.t.Helper()
	if !s.users[strings.ToLower(user)] {
		s.t.Fatalf("dovecottest: Messages(%q): not one of Options.Users", user)
	}
	msgs, err := readMaildir(s.Maildir(user))
	if err != nil {
		s.t.Fatalf("dovecottest: %v", err)
	}
	return msgs
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

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

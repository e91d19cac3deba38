// Package redistest runs a real, throw-away redis-server for tests, and the
// setups a fleet meets in production: a primary with replicas watched by
// redis-sentinel processes (StartSentinels), and a Redis Cluster
// (StartCluster).
//
// Each server listens on a free port of 127.0.0.1, keeps nothing on disk
// (no RDB snapshots, no append-only file) and lives in its own temporary
// directory; it is killed when the test ends. Stop, Restart, Pause and Resume
// let a test simulate a crashed, restarted or hung Redis.
//
// When redis-server (or redis-sentinel, redis-cli) is not installed the test
// fails, naming the Debian package to install: a skipped test would let the
// Redis tests silently stop running.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer its first PING.
const startTimeout = 10 * time.Second

// Server is one running redis-server. Its methods must be called from the
// test's goroutine, like t.Fatal.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1. It stays the same across
	// Restart, as a real server's address would.
	Addr string

	t       testing.TB
	bin     string
	dir     string
	args    []string // after the common ones: a replica's --replicaof, a cluster node's
	conf    string   // redis-sentinel: its configuration file, which it rewrites
	pass    string   // the password PING needs ("" for none)
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error         // set before exited is closed
}

// Start starts a redis-server and returns its address.
func Start(t testing.TB) (addr string) {
	t.Helper()
	return StartServer(t).Addr
}

// StartServer starts a redis-server and returns a handle to stop, restart,
// pause and resume it. The server is killed in t.Cleanup. args are more
// redis-server options ("--replicaof", "127.0.0.1", "6379").
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, bin: lookPath(t, "redis-server", "redis-server"), dir: t.TempDir(), args: args}
	t.Cleanup(s.kill)
	s.listen()
	return s
}

// lookPath finds a program, or fails the test naming its Debian package.
func lookPath(t testing.TB, name, debianPackage string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("redistest: %s is not installed: install the Debian package %s (./test.sh does): %v", name, debianPackage, err)
	}
	return bin
}

// listen starts s on a free port of 127.0.0.1.
func (s *Server) listen() {
	s.t.Helper()
	t := s.t

	// The port is picked by the kernel and released before redis-server
	// binds it, so another process may take it in between; try again then.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return
		}
	}
	t.Fatalf("redistest: %v", lastErr)
}

// Stop kills the server, as a crash would. Its data is lost.
func (s *Server) Stop() {
	s.t.Helper()
	s.kill()
}

// Restart starts a stopped server again on the same address, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

// Pause freezes the server (SIGSTOP): the kernel still accepts connections
// on its behalf but nothing answers, as with a hung server or a network that
// drops packets.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
}

// Resume undoes Pause.
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(syscall.SIGCONT)
}

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil {
		s.t.Fatalf("redistest: %v: server is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: %v: %v", sig, err)
	}
}

func (s *Server) start() error {
	host, port, _ := net.SplitHostPort(s.Addr)
	logPath := filepath.Join(s.dir, "redis.log")
	var argv []string
	if s.conf != "" {
		argv = append(argv, s.conf) // a Sentinel's file comes first
	} else {
		argv = append(argv, "--save", "", "--appendonly", "no")
	}
	argv = append(argv,
		"--bind", host,
		"--port", port,
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", logPath,
	)
	cmd := exec.Command(s.bin, append(argv, s.args...)...)
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
		err := ping(s.Addr, s.pass)
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			s.cmd = nil
			return fmt.Errorf("redis-server on %s exited (%v): %s", s.Addr, s.waitErr, tail(logPath))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on %s did not answer PING within %v: %v; %s",
				s.Addr, startTimeout, err, tail(logPath))
		}
	}
}

// kill is idempotent so that it can serve both Stop and t.Cleanup.
func (s *Server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill() // SIGKILL also ends a process stopped by Pause
	<-s.exited
	s.cmd = nil
}

// ping sends one PING in RESP, after an AUTH when pass is set, and expects
// +PONG.
func ping(addr, pass string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	if pass != "" {
		auth := fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(pass), pass)
		if _, err := c.Write([]byte(auth)); err != nil {
			return err
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line != "+OK\r\n" {
			return errors.New(strings.TrimSpace(line))
		}
	}
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		// -LOADING and the like: not ready yet.
		return errors.New(strings.TrimSpace(line))
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the end of the server's log for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no log: " + err.Error()
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "log: " + strings.TrimSpace(string(b))
}

// addrs are the servers' addresses.
func addrs(servers []*Server) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.Addr
	}
	return out
}

// waitReady asks ready every interval until it says yes; past deadline
// the test fails, naming what it waited for and ready's last word.
func waitReady(t testing.TB, deadline time.Time, every time.Duration, what string, ready func() (bool, string)) {
	t.Helper()
	for {
		ok, last := ready()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: no %s within %v: %s", what, readyTimeout, last)
		}
		time.Sleep(every)
	}
}

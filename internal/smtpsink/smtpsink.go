// Package smtpsink runs a REAL Postfix smtp-sink(1) process for tests: an
// event-driven SMTP/LMTP server that accepts (or rejects, as its flags
// say) and dumps each transaction to a file, so that tests of SMTP
// clients talk to a server they did not write themselves.
//
// It is test support only: every function takes a testing.TB, and a
// sink lives no longer than the test that started it.
package smtpsink

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Path is where Debian's postfix package installs smtp-sink.
const Path = "/usr/sbin/smtp-sink"

// Options say how to start a sink. The zero value is a TCP sink on a free
// loopback port that accepts everything.
type Options struct {
	// Flags are smtp-sink's own options, such as "-L" or "-r", "RCPT".
	Flags []string
	// Addr is the TCP address to listen on; "" picks a free loopback
	// port. A test that restarts a sink on the same address sets it.
	Addr string
	// Unix makes the sink listen on a unix socket in its directory
	// instead of TCP; Addr is then ignored.
	Unix bool
	// Backlog is the listen backlog; 0 means 16. Floods of concurrent
	// connections want more.
	Backlog int
	// Count has smtp-sink count sessions, QUIT commands and messages
	// (its -c), for Counts: how many connections a client made.
	Count bool
}

// Sink is a running smtp-sink.
type Sink struct {
	Network string // "tcp" or "unix", for net.Dial
	Addr    string // host:port, or the socket path of a unix sink
	// Dir is the sink's own directory. Transactions are dumped under
	// Dir/new, so Dir can be watched as a Maildir.
	Dir string
	// DumpDir holds a file msg.* per transaction. smtp-sink creates the
	// file when a transaction starts and removes it, a moment after the
	// client has gone, if none was completed.
	DumpDir string
	PID     int

	stop    func()
	counter *counter // with Options.Count
}

// Start starts smtp-sink as opts say, waits until it greets and stops it
// when the test ends. Without smtp-sink the test fails, naming the Debian
// package to install, rather than quietly test nothing.
func Start(t testing.TB, opts Options) *Sink {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Fatalf("smtp-sink is not installed: install the Debian package postfix (./test.sh does): %v", err)
	}
	dir := t.TempDir()
	s := &Sink{Network: "tcp", Dir: dir, DumpDir: filepath.Join(dir, "new")}
	// Run as root, smtp-sink drops to nobody, who must reach and write
	// the dump directory.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(s.DumpDir, 0o777); err != nil {
		t.Fatal(err)
	}
	// Chmod again: Mkdir's mode is filtered by the umask.
	if err := os.Chmod(s.DumpDir, 0o777); err != nil {
		t.Fatal(err)
	}

	var listen string
	if opts.Unix {
		s.Network = "unix"
		s.Addr = filepath.Join(dir, "sock")
		listen = "unix:" + s.Addr
	} else {
		s.Addr = opts.Addr
		if s.Addr == "" {
			s.Addr = FreePort(t)
		}
		listen = "inet:" + s.Addr
	}
	backlog := opts.Backlog
	if backlog == 0 {
		backlog = 16
	}
	args := append([]string{}, opts.Flags...)
	if opts.Count {
		args = append(args, "-c")
		s.counter = &counter{}
	}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, "-d", s.DumpDir+"/msg.", listen, strconv.Itoa(backlog))
	cmd := exec.Command(Path, args...)
	cmd.Stderr = os.Stderr
	if s.counter != nil {
		cmd.Stdout = s.counter
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.PID = cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(s.stop)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, s.Network, s.Addr)
		if err == nil {
			// Read the greeting so smtp-sink does not log a lost client.
			c.SetReadDeadline(time.Now().Add(time.Second))
			bufio.NewReader(c).ReadString('\n')
			c.Close()
			if s.counter != nil {
				s.counter.settle(ctx, t)
			}
			return s
		}
		select {
		case <-exited:
			t.Fatalf("smtp-sink %v exited: %v", args, waitErr)
		case <-ctx.Done():
			t.Fatalf("smtp-sink on %s did not start: %v", s.Addr, err)
		case <-tick.C:
		}
	}
}

// Stop kills smtp-sink and waits for it to exit, for tests of a server
// that goes away. It may be called more than once.
func (s *Sink) Stop() { s.stop() }

// Dumps returns the contents of the dump files so far, in name order.
// A file is empty while its transaction is open, and stays so if none
// was completed.
func (s *Sink) Dumps(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.DumpDir, "msg.*"))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// FreePort returns a loopback address with a port that was free a moment
// ago.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Counts returns what smtp-sink counted (Options.Count) since Start
// returned: sessions ended, QUIT commands and messages received. A
// session is counted when it has ended: after the client's QUIT, or its
// close, has reached the sink.
func (s *Sink) Counts(t testing.TB) (sessions, quits, messages int) {
	t.Helper()
	if s.counter == nil {
		t.Fatal("smtpsink: Counts without Options.Count")
	}
	s.counter.mu.Lock()
	defer s.counter.mu.Unlock()
	c := s.counter
	return c.sess - c.base, c.quit, c.mesg
}

// counter reads smtp-sink -c's output: "sess=N quit=N mesg=N" lines, each
// ended by a carriage return.
type counter struct {
	mu               sync.Mutex
	buf              []byte
	sess, quit, mesg int
	base             int // the sessions of Start's own check
}

func (c *counter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	for {
		i := bytes.IndexAny(c.buf, "\r\n")
		if i < 0 {
			return len(p), nil
		}
		var sess, quit, mesg int
		if n, _ := fmt.Sscanf(string(c.buf[:i]), "sess=%d quit=%d mesg=%d", &sess, &quit, &mesg); n == 3 {
			c.sess, c.quit, c.mesg = sess, quit, mesg
		}
		c.buf = c.buf[i+1:]
	}
}

// settle waits until the session of Start's check has been counted and
// takes it as the base.
func (c *counter) settle(ctx context.Context, t testing.TB) {
	t.Helper()
	for {
		c.mu.Lock()
		n := c.sess
		c.mu.Unlock()
		if n >= 1 {
			c.mu.Lock()
			c.base = n
			c.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("smtpsink: the readiness check's session was never counted")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

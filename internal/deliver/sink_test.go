package deliver

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const smtpSinkPath = "/usr/sbin/smtp-sink"

// sink is a running Postfix smtp-sink(1): a real SMTP/LMTP server that
// accepts (or rejects, as its flags say) and dumps each transaction.
type sink struct {
	addr    string // host:port, or the socket path for a unix sink
	dumpDir string
	stop    func() // kills smtp-sink and waits for it; idempotent
}

// startSink starts smtp-sink with flags on a free loopback port, or on a
// unix socket when unixSocket is true, waits until it accepts connections
// and stops it when the test ends. Every transaction is dumped to a file
// in s.dumpDir.
func startSink(t testing.TB, unixSocket bool, flags ...string) *sink {
	t.Helper()
	return startSinkAt(t, "", unixSocket, flags...)
}

// startSinkAt is startSink on a given TCP address ("" for a free one).
func startSinkAt(t testing.TB, addr string, unixSocket bool, flags ...string) *sink {
	t.Helper()
	if _, err := os.Stat(smtpSinkPath); err != nil {
		t.Skipf("smtp-sink not installed (Debian package postfix): %v", err)
	}
	dir := t.TempDir()
	s := &sink{dumpDir: filepath.Join(dir, "dump")}
	// smtp-sink drops to nobody, who must reach and write the dump dir.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(s.dumpDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.dumpDir, 0o777); err != nil {
		t.Fatal(err)
	}

	network, listen := "tcp", ""
	if unixSocket {
		network = "unix"
		s.addr = filepath.Join(dir, "lmtp.sock")
		listen = "unix:" + s.addr
	} else {
		s.addr = addr
		if s.addr == "" {
			s.addr = freePort(t)
		}
		listen = "inet:" + s.addr
	}
	args := append([]string{}, flags...)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, "-d", s.dumpDir+"/msg.", listen, "16")
	cmd := exec.Command(smtpSinkPath, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
		c, err := d.DialContext(ctx, network, s.addr)
		if err == nil {
			// Read the greeting so smtp-sink does not log a lost client.
			c.SetReadDeadline(time.Now().Add(time.Second))
			bufio.NewReader(c).ReadString('\n')
			c.Close()
			return s
		}
		select {
		case <-exited:
			t.Fatalf("smtp-sink %v exited: %v", args, waitErr)
		case <-ctx.Done():
			t.Fatalf("smtp-sink on %s did not start: %v", s.addr, err)
		case <-tick.C:
		}
	}
}

// freePort returns a loopback address with a port that was free a moment
// ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// sinkDump is one transaction as smtp-sink recorded it.
type sinkDump struct {
	mailArgs string
	rcpts    []string
	body     string // what followed smtp-sink's own headers, LF line endings
}

// dumps returns the transactions recorded so far.
func (s *sink) dumps(t *testing.T) []sinkDump {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.dumpDir, "msg.*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []sinkDump
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d sinkDump
		lines := strings.SplitAfter(string(b), "\n")
		i := 0
		for ; i < len(lines); i++ {
			l := strings.TrimSuffix(lines[i], "\n")
			switch {
			case strings.HasPrefix(l, "X-Mail-Args: "):
				d.mailArgs = strings.TrimPrefix(l, "X-Mail-Args: ")
			case strings.HasPrefix(l, "X-Rcpt-Args: "):
				d.rcpts = append(d.rcpts, strings.TrimPrefix(l, "X-Rcpt-Args: "))
			case strings.HasPrefix(l, "X-"):
			case strings.HasPrefix(l, "Received: "):
				// smtp-sink's Received header: skip its continuation lines.
				for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
					i++
				}
				d.body = strings.Join(lines[i+1:], "")
				i = len(lines)
			}
		}
		out = append(out, d)
	}
	return out
}

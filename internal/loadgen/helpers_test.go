package loadgen

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const smtpSinkPath = "/usr/sbin/smtp-sink"

// sink is a running Postfix smtp-sink(1), a real event-driven SMTP server
// that writes each transaction it accepts to its own file under dir/new/,
// so that the files count the messages it took and WaitMaildir can watch
// them arrive.
type sink struct {
	addr string
	dir  string
	pid  int
}

// startSink starts smtp-sink with flags on a free loopback port, waits
// until it accepts connections and kills it when the test ends.
func startSink(t testing.TB, flags ...string) *sink {
	t.Helper()
	if _, err := os.Stat(smtpSinkPath); err != nil {
		t.Skipf("smtp-sink not installed (Debian package postfix): %v", err)
	}
	s := &sink{addr: freePort(t), dir: t.TempDir()}
	// smtp-sink drops to nobody, who must reach the dump directory.
	for _, d := range []string{filepath.Dir(s.dir), s.dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	args := append([]string{}, flags...)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, "-d", s.dir+"/new/msg.", "inet:"+s.addr, "256")
	cmd := exec.Command(smtpSinkPath, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.pid = cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", s.addr)
		if err == nil {
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

// messages returns the transactions smtp-sink has completed so far.
func (s *sink) messages(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.dir, "new", "msg.*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// smtp-sink creates the file when a transaction starts and removes
		// it, a moment after the client has gone, if none was completed.
		if len(b) > 0 {
			out = append(out, string(b))
		}
	}
	return out
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

// lineServer is a tiny scripted SMTP server for what smtp-sink cannot do:
// refuse commands while offering PIPELINING, or greet with a rejection
// and close. Each connection runs handle; accepted counts connections.
type lineServer struct {
	addr     string
	accepted atomic.Int64
}

// startLineServer listens on a free loopback port and serves each
// connection with handle until the test ends.
func startLineServer(t testing.TB, handle func(c net.Conn)) *lineServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return s
}

// scripted returns a handler that speaks enough SMTP for a transaction,
// offers PIPELINING, and answers each verb from replies (a verb missing
// there gets 250, DATA 354). It reads commands one line at a time, so
// pipelined commands are answered in order as RFC 2920 requires. It adds
// one to pipelined for each MAIL that arrived with more commands behind it.
func scripted(replies map[string]string, pipelined *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		w := bufio.NewWriter(c)
		reply := func(s string) bool {
			w.WriteString(s + "\r\n")
			// Answer pipelined commands in one write, as servers do.
			if r.Buffered() > 0 {
				return true
			}
			return w.Flush() == nil
		}
		reply("220 scripted ESMTP")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			verb, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			verb = strings.ToUpper(verb)
			if verb == "MAIL" && r.Buffered() > 0 {
				pipelined.Add(1)
			}
			resp, ok := replies[verb]
			switch {
			case ok:
			case verb == "EHLO":
				resp = "250-scripted\r\n250 PIPELINING"
			case verb == "DATA":
				resp = "354 go ahead"
			case verb == "QUIT":
				resp = "221 bye"
			default:
				resp = "250 ok"
			}
			if !reply(resp) {
				return
			}
			if verb == "QUIT" || strings.HasPrefix(resp, "421") {
				w.Flush()
				return
			}
			if verb == "DATA" && strings.HasPrefix(resp, "354") {
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
				}
				dot, ok := replies["."]
				if !ok {
					dot = "250 queued"
				}
				if !reply(dot) {
					return
				}
			}
		}
	}
}

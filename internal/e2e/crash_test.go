package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKill9: many concurrent senders, the server killed with SIGKILL in
// mid-stream, then restarted: every message that got 250 is delivered
// exactly once, and no message is delivered twice. Local delivery: the
// Maildir file is the durable copy.
func TestKill9(t *testing.T) {
	m := startMX(t, "")
	kill9(t, m, m, filepath.Join(m.dir, "data/mail/localhost"), 0)
}

// TestKill9Relay: the same with mxguard in front of another MTA (a second
// mxguard), so that accepted mail sits in the spool until relayed. Every
// message that got 250 reaches the back server after the restart. A relay
// delivery cut off between the final dot and its reply is made again, as
// in every SMTP client (RFC 5321 6.1), so duplicates are allowed up to the
// number of deliveries that can be in flight (16 workers).
func TestKill9Relay(t *testing.T) {
	back := startMX(t, "hostname = \"back.test\"\nlocal_domains = [\"localhost\"]\n")
	front := startMX(t, fmt.Sprintf("hostname = \"front.test\"\n[delivery]\nrelay = \"smtp://%s\"\n", back.addr))
	kill9(t, front, back, filepath.Join(back.dir, "data/mail/localhost"), 16)
}

// kill9 sends from 8 concurrent senders to m until 150 messages got 250,
// kills m with SIGKILL while they are still sending, restarts it, and
// waits until every acknowledged message is in a Maildir under root
// (written by dst), failing on more than maxDups duplicates.
func kill9(t *testing.T, m, dst *mx, root string, maxDups int) {
	t.Helper()
	const senders = 8
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	enough := make(chan struct{})
	var once sync.Once
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 500; i++ {
				subj := fmt.Sprintf("crash-%d-%d", s, i)
				body := "Subject: " + subj + "\r\n\r\n" + strings.Repeat("x", 512) + "\r\n"
				err := sendQuiet(m.addr, "a@example.org", []string{fmt.Sprintf("u%d@localhost", s%3)}, body)
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				acked[subj] = true
				if len(acked) >= 150 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-enough:
	case <-time.After(30 * time.Second):
		t.Fatal("senders did not get 150 messages through in 30s")
	}
	m.kill() // mid-stream: senders are still sending
	stop()
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	t.Logf("%d messages got 250 before SIGKILL", n)

	m.start()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		count, bad := deliveredSubjects(t, root)
		var dups []string
		for s, c := range count {
			if c > 1 {
				dups = append(dups, fmt.Sprintf("%s×%d", s, c))
			}
		}
		if len(bad) > 0 || len(dups) > maxDups {
			t.Fatalf("unreadable %v; delivered more than once (%d allowed): %v", bad, maxDups, dups)
		}
		missing := 0
		for s := range acked {
			if count[s] == 0 {
				missing++
			}
		}
		if missing == 0 {
			if len(dups) > 0 {
				t.Logf("%d relay deliveries repeated after the crash: %v", len(dups), dups)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never delivered; log:\n%s\n%s", missing, n, m.logs(), dst.logs())
		}
		<-tick.C
	}
}

var subjectRE = regexp.MustCompile(`(?m)^Subject: (crash-\d+-\d+)$`)

// deliveredSubjects counts each test subject in every Maildir under root.
func deliveredSubjects(t *testing.T, root string) (map[string]int, []string) {
	t.Helper()
	count := map[string]int{}
	var bad []string
	files, _ := filepath.Glob(filepath.Join(root, "*", "new", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		m := subjectRE.FindSubmatch(b)
		if m == nil {
			bad = append(bad, "unreadable "+f)
			continue
		}
		count[string(m[1])]++
	}
	return count, bad
}

// TestGracefulStop: SIGTERM while a client is in the middle of DATA; the
// client finishes, gets 250, and the message is delivered; the process
// exits by itself.
func TestGracefulStop(t *testing.T) {
	m := startMX(t, "")
	c := rawClient(t, "127.0.0.1", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO c.test"), "250")
	expect(t, c.cmd("MAIL FROM:<a@example.org>"), "250")
	expect(t, c.cmd("RCPT TO:<grace@localhost>"), "250")
	expect(t, c.cmd("DATA"), "354")
	c.c.Write([]byte("Subject: in flight\r\n\r\nfirst half\r\n"))
	idle := rawClient(t, "127.0.0.1", m.addr)
	expect(t, idle.reply(), "220")
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.waitLog("shutting down", 10*time.Second)
	expect(t, idle.reply(), "421 4.3.2 mx.test Service shutting down")
	expect(t, c.cmd("second half\r\n."), "250 2.0.0 Ok: queued as")
	// Its transaction done, the session is told the server is going.
	expect(t, c.cmd("QUIT"), "421 4.3.2")
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("server did not exit after the last session")
	}
	// Delivery may not have run before the stop; a restart delivers it.
	m.start()
	files := waitMaildir(t, m, filepath.Join(m.dir, "data/mail/localhost/grace"), 1)
	if got := readFile(t, files[0]); !strings.Contains(got, "first half\nsecond half\n") {
		t.Fatalf("delivered:\n%s", got)
	}
}

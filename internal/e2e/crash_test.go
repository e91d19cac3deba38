package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/server"
	"github.com/mxguard/mxguard/internal/spool"
)

// TestKill9: many concurrent senders, the server killed with SIGKILL in
// mid-stream, then restarted: every message that got 250 is delivered
// exactly once. Local delivery: the Maildir file is the durable copy.
// What the crash left in the Maildirs' tmp/ is removed after the restart,
// and one log line says how much.
func TestKill9(t *testing.T) {
	m := startMX(t, "")
	root := filepath.Join(m.dir, "data/mail/localhost")
	acked := sendAndKill(t, m, "crash-0")
	left := tmpFiles(root)
	t.Logf("the crash left %d files in tmp/", len(left))
	// One more of mxguard's from an earlier crash, so that the count does
	// not hang on where this one struck, and one of another program
	// (Dovecot's name), written just now, which must stay.
	earlier := filepath.Join(root, "u0/tmp/1700000000.S33LL1RPR02B256FPIGG99KVRR0G0123456789abcdef.mx.test")
	foreign := filepath.Join(root, "u0/tmp/1700000000.M123456P789.mx.test")
	for _, p := range []string{earlier, foreign} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("Subject: half a message\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mark := len(m.logs())
	m.start()
	count := waitDelivered(t, m, m, root, acked)
	if dups := duplicates(count, "crash-0-"); len(dups) > 0 {
		t.Errorf("delivered more than once: %v", dups)
	}
	line := m.waitLogSince(mark, "maildir: removed", 10*time.Second)
	want := fmt.Sprintf("maildir: removed %d stale files from tmp/\" own=%d foreign=0 ", len(left)+1, len(left)+1)
	if !strings.Contains(line, want) {
		t.Errorf("log line\n%s\nwant it to contain %q", line, want)
	}
	if got := tmpFiles(root); len(got) != 1 || got[0] != foreign {
		t.Errorf("after the restart tmp/ holds %q, want only %s", got, foreign)
	}
}

// TestKill9Relay: the same with mxguard in front of another MTA (a second
// mxguard), so that accepted mail sits in the spool (its log: the messages
// are small) until relayed, and killed three times in a row. Every message
// that got 250 reaches the back server after each restart, whole. Relaying
// is at-least-once: a delivery that the back server had accepted when the
// front died, but that the front had not yet retired from its spool, is
// made again after the restart. Each delivery worker has at most one such
// delivery in flight, so no kill may cause more duplicates than there are
// workers. A kill leaves no damaged record in the log.
func TestKill9Relay(t *testing.T) {
	back := startMX(t, "hostname = \"back.test\"\nlocal_domains = [\"localhost\"]\n")
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	front := startMX(t, fmt.Sprintf("hostname = \"front.test\"\n[delivery]\nrelay = \"smtp://%s\"\n[admin]\nlisten = %q\n", back.addr, admin))
	root := filepath.Join(back.dir, "data/mail/localhost")
	for kill := range 3 {
		prefix := fmt.Sprintf("crash-%d-", kill)
		acked := sendAndKill(t, front, prefix)
		mark := len(front.logs())
		front.start()
		opened := front.waitLogSince(mark, "spool: opened", 10*time.Second)
		t.Logf("kill %d: %s", kill+1, opened)
		if strings.Contains(front.logs()[mark:], "damaged log segment") || strings.Contains(front.logs()[mark:], "log segment unreadable") {
			t.Errorf("kill %d left a damaged log:\n%s", kill+1, front.logs()[mark:])
		}
		waitDelivered(t, front, back, root, acked)
		// Once the front's spool is empty nothing more can arrive, and
		// the next kill cannot repeat a message of this one.
		deadline := time.Now().Add(30 * time.Second)
		for {
			empty := spoolMessages(t, admin) == 0
			dups := duplicates(deliveredSubjects(t, root), prefix)
			if len(dups) > server.DeliveryWorkers {
				t.Fatalf("kill %d: %d messages delivered more than once, more than the %d delivery workers can have in flight: %v",
					kill+1, len(dups), server.DeliveryWorkers, dups)
			}
			if empty {
				t.Logf("kill %d: %d of %d acknowledged messages delivered twice: %v", kill+1, len(dups), len(acked), dups)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the front's spool still holds messages after 30s; log:\n%s", front.logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// sendAndKill sends from 8 concurrent senders to m until 150 messages got
// 250, kills m with SIGKILL while they are still sending, and returns the
// subjects (prefix + sender + sequence) that got 250.
func sendAndKill(t *testing.T, m *mx, prefix string) map[string]bool {
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
				subj := fmt.Sprintf("%s%d-%d", prefix, s, i)
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
	defer mu.Unlock()
	t.Logf("%d messages got 250 before SIGKILL", len(acked))
	return acked
}

// waitDelivered waits until every acknowledged subject is in a Maildir
// under root (written by dst) and returns the count of each test subject
// there.
func waitDelivered(t *testing.T, m, dst *mx, root string, acked map[string]bool) map[string]int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		count := deliveredSubjects(t, root)
		missing := 0
		for s := range acked {
			if count[s] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return count
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never delivered; log:\n%s\n%s", missing, len(acked), m.logs(), dst.logs())
		}
		<-tick.C
	}
}

// spoolMessages is the number of messages in the spool of the mxguard
// whose admin listener is admin (mxguard_spool_messages).
func spoolMessages(t *testing.T, admin string) int {
	t.Helper()
	m := spoolGauge.FindStringSubmatch(httpGet(t, "http://"+admin+"/metrics"))
	if m == nil {
		t.Fatalf("no mxguard_spool_messages at %s", admin)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var spoolGauge = regexp.MustCompile(`(?m)^mxguard_spool_messages ([0-9]+)$`)

// spooled stops m (a running mxguard holds its spool's lock) and returns
// the envelope and body of each message its spool still holds.
func spooled(t *testing.T, m *mx) []string {
	t.Helper()
	m.stop()
	sp, err := spool.Open(filepath.Join(m.dir, "data/spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ids, err := sp.Queued()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, id := range ids {
		env, err := sp.Envelope(id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := sp.Body(id)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(b)
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%+v\n%s", *env, body))
	}
	return out
}

// duplicates lists the subjects with prefix that count holds more than once.
func duplicates(count map[string]int, prefix string) []string {
	var dups []string
	for s, c := range count {
		if c > 1 && strings.HasPrefix(s, prefix) {
			dups = append(dups, fmt.Sprintf("%s×%d", s, c))
		}
	}
	slices.Sort(dups)
	return dups
}

var subjectRE = regexp.MustCompile(`(?m)^Subject: (crash-[0-9-]+)$`)

// deliveredSubjects counts each test subject in every Maildir under root;
// a file without one, or without the whole body sendAndKill sent, fails
// the test: no half message may ever be delivered.
func deliveredSubjects(t *testing.T, root string) map[string]int {
	t.Helper()
	count := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(root, "*", "new", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		m := subjectRE.FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no test subject in\n%s", f, b)
		}
		if !bytes.Contains(b, []byte("\n\n"+strings.Repeat("x", 512)+"\n")) {
			t.Fatalf("%s: not the whole message sent:\n%s", f, b)
		}
		count[string(m[1])]++
	}
	return count
}

// tmpFiles lists the files in the tmp/ of every Maildir under root.
func tmpFiles(root string) []string {
	files, _ := filepath.Glob(filepath.Join(root, "*", "tmp", "*"))
	return files
}

// waitLogSince is waitLog for the log written after its first mark bytes
// (the log of an earlier run of the same server).
func (m *mx) waitLogSince(mark int, s string, d time.Duration) string {
	m.t.Helper()
	deadline := time.After(d)
	for {
		m.mu.Lock()
		logs, ch := m.log.String()[mark:], m.logCond
		m.mu.Unlock()
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, s) {
				return l
			}
		}
		select {
		case <-ch:
		case <-m.exited:
			m.t.Fatalf("mxguard exited while waiting for a line with %q; log:\n%s", s, logs)
		case <-deadline:
			m.t.Fatalf("no log line with %q after %v; log:\n%s", s, d, logs)
		}
	}
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

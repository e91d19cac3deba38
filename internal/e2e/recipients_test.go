package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRecipientsMaildir: with a recipients file and an aliases file, the
// real binary accepts mail only for addresses that exist, expands aliases
// at RCPT, names the message in its Received: header by the queue id of the
// 250 and the log, and picks up a changed file on SIGHUP (a broken one
// keeps the old).
func TestRecipientsMaildir(t *testing.T) {
	dir := t.TempDir()
	rcpts := writeFile(t, dir, "recipients", "alice@example.org\nbob@example.org\n")
	aliases := writeFile(t, dir, "aliases", "# sendmail aliases\nteam: alice,\n\tbob\nroot: alice\n")
	m := startMX(t, fmt.Sprintf("local_domains = [\"example.org\"]\n[recipients]\nfile = %q\naliases = %q\n", rcpts, aliases))
	mail := filepath.Join(m.dir, "data/mail/example.org")

	c := rawClient(t, "127.0.0.1", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO client.test"), "250")
	expect(t, c.cmd("MAIL FROM:<sender@example.net>"), "250")
	expect(t, c.cmd("RCPT TO:<alice@example.org>"), "250 2.1.5")
	expect(t, c.cmd("RCPT TO:<carol@example.org>"), "550 5.1.1 <carol@example.org>: Recipient address rejected: User unknown")
	expect(t, c.cmd("RCPT TO:<team@example.org>"), "250 2.1.5")
	expect(t, c.cmd("DATA"), "354")
	got := c.cmd("Subject: trace me\r\n\r\nhello\r\n.")
	expect(t, got, "250 2.0.0 Ok: queued as ")
	id := strings.TrimPrefix(got, "250 2.0.0 Ok: queued as ")
	expect(t, c.cmd("QUIT"), "221")

	// alice once (named and through the alias), bob through the alias.
	for _, u := range []string{"alice", "bob"} {
		files := waitMaildir(t, m, filepath.Join(mail, u), 1)
		msg := readFile(t, files[0])
		if !regexp.MustCompile(`(?m)^\tby mx\.test \(mxguard\) with ESMTP id ` + regexp.QuoteMeta(id) + `;$`).MatchString(msg) {
			t.Errorf("%s's copy: the Received: header does not carry the queue id %s:\n%s", u, id, msg)
		}
		if !strings.Contains(filepath.Base(files[0]), id) {
			t.Errorf("file name %s does not carry the queue id %s", files[0], id)
		}
	}
	m.waitLog("msg=accepted id="+id, 5*time.Second)
	m.waitLog(`msg="unknown user <carol@example.org> from unknown [127.0.0.1]" ip=127.0.0.1 reason=unknown_user`, 5*time.Second)
	if _, err := os.Stat(filepath.Join(mail, "carol")); err == nil {
		t.Error("a mailbox was made for the unknown carol")
	}

	// carol is added: after SIGHUP she exists. A broken file then keeps her.
	os.WriteFile(rcpts, []byte("alice@example.org\nbob@example.org\ncarol@example.org\n"), 0o644)
	m.hup("configuration reloaded")
	if err := sendGo(t, "127.0.0.1", m.addr, "s@example.net", []string{"carol@example.org"}, "Subject: welcome\r\n\r\nhi\r\n"); err != nil {
		t.Fatalf("carol after the reload: %v", err)
	}
	waitMaildir(t, m, filepath.Join(mail, "carol"), 1)
	os.WriteFile(rcpts, []byte("not an address\n"), 0o644)
	m.hup("reload failed")
	if err := sendGo(t, "127.0.0.1", m.addr, "s@example.net", []string{"carol@example.org"}, "Subject: again\r\n\r\nhi\r\n"); err != nil {
		t.Fatalf("carol after a failed reload: %v", err)
	}
}

// TestDictionaryAttack: 200 random names from one client, over ten
// sessions at once. Every one is refused with 550 5.1.1, sendmail's
// BAD_RCPT_THROTTLE slows each session after bad_rcpt_throttle refusals,
// max_bad_rcpts ends each with 421, and no mailbox is made.
func TestDictionaryAttack(t *testing.T) {
	dir := t.TempDir()
	rcpts := writeFile(t, dir, "recipients", "alice@example.org\n")
	m := startMX(t, fmt.Sprintf("local_domains = [\"example.org\"]\n[limits]\nbad_rcpt_throttle = 17\nmax_bad_rcpts = 20\n[recipients]\nfile = %q\n", rcpts))
	const sessions, perSession = 10, 20
	var mu sync.Mutex
	refused, cut := 0, 0
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Go(func() {
			c := rawClient(t, "127.0.0.66", m.addr)
			if got := c.reply(); !strings.HasPrefix(got, "220") {
				t.Errorf("session %d: greeting %q", s, got)
				return
			}
			c.cmd("EHLO bot.test")
			c.cmd("MAIL FROM:<x@example.net>")
			for i := range perSession {
				got := c.cmd(fmt.Sprintf("RCPT TO:<guess%d-%d@example.org>", s, i))
				mu.Lock()
				if strings.HasPrefix(got, "550 5.1.1 ") {
					refused++
				} else {
					t.Errorf("session %d guess %d: %q, want 550 5.1.1", s, i, got)
				}
				mu.Unlock()
			}
			if got := c.reply(); got == "421 4.7.0 mx.test Error: too many invalid recipients" {
				mu.Lock()
				cut++
				mu.Unlock()
			} else {
				t.Errorf("session %d after %d refusals: %q, want the 421", s, perSession, got)
			}
		})
	}
	wg.Wait()
	if refused != sessions*perSession || cut != sessions {
		t.Errorf("%d refused, %d sessions cut; want %d and %d", refused, cut, sessions*perSession, sessions)
	}
	m.waitLogCount("reason=too_many_bad_rcpts", sessions)
	for what, want := range map[string]int{"reason=bad_rcpt_throttle": sessions, "reason=too_many_bad_rcpts": sessions, "reason=unknown_user": sessions * perSession} {
		if n := m.logCount(what); n != want {
			t.Errorf("%d log lines with %s, want %d", n, what, want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(m.dir, "data/mail")); len(entries) != 0 {
		t.Errorf("mailboxes made during the attack: %v", entries)
	}
}

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVerifyProbeMXGuard: mxguard in front of another MTA (a second
// mxguard that knows its users) with verify = "probe" answers each RCPT
// with the downstream's word: 250 for a user it has, 550 5.1.1 for one it
// refuses, 450 4.1.1 when it is away; a forged sender's message to a user
// nobody has is refused at RCPT, so no bounce ever goes to the forged
// address.
func TestVerifyProbeMXGuard(t *testing.T) {
	dir := t.TempDir()
	users := writeFile(t, dir, "users", "alice@example.org\n")
	back := startMX(t, fmt.Sprintf("hostname = \"back.test\"\nlocal_domains = [\"example.org\"]\n[recipients]\nfile = %q\n", users))
	front := startMX(t, fmt.Sprintf("hostname = \"front.test\"\nlocal_domains = [\"example.org\"]\ntrusted_networks = []\n"+
		"[delivery]\nrelay = \"smtp://%s\"\nverify = \"probe\"\nverify_negative_ttl = \"1s\"\n[recipients]\ncatch_all = false\n", back.addr))

	c := rawClient(t, "127.0.0.31", front.addr)
	expect(t, c.reply(), "220 front.test")
	expect(t, c.cmd("EHLO client.test"), "250")
	expect(t, c.cmd("MAIL FROM:<victim@other.test>"), "250")
	expect(t, c.cmd(`RCPT TO:<"x>y"@example.org>`), `550 5.1.1 <"x>y"@example.org>: Recipient address rejected: User unknown`)
	expect(t, c.cmd("RCPT TO:<nobody@example.org>"), "550 5.1.1")
	expect(t, c.cmd("RCPT TO:<alice@example.org>"), "250 2.1.5")
	expect(t, c.cmd("DATA"), "354")
	expect(t, c.cmd("Subject: verified\r\n\r\nhello\r\n."), "250 2.0.0 Ok: queued as")
	expect(t, c.cmd("QUIT"), "221")
	waitMaildir(t, back, filepath.Join(back.dir, "data/mail/example.org/alice"), 1)
	front.waitLog(`reason=unknown_user`, 5*time.Second)
	if strings.Contains(front.logs(), "bounce queued") {
		t.Errorf("a bounce was queued:\n%s", front.logs())
	}

	// The downstream away: unverified, 450, never 250 and never 550.
	back.stop()
	time.Sleep(1100 * time.Millisecond) // past verify_negative_ttl: nobody@ is asked again
	c = rawClient(t, "127.0.0.31", front.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO client.test"), "250")
	expect(t, c.cmd("MAIL FROM:<sender@example.net>"), "250")
	expect(t, c.cmd("RCPT TO:<nobody@example.org>"), "450 4.1.1 <nobody@example.org>: Recipient address rejected: unverified address")
	expect(t, c.cmd("RCPT TO:<bob@example.org>"), "450 4.1.1")
	// alice was verified before, and is remembered.
	expect(t, c.cmd("RCPT TO:<alice@example.org>"), "250 2.1.5")
	expect(t, c.cmd("QUIT"), "221")
	front.waitLog("reason=unverified", 5*time.Second)

	// Nothing was accepted for the unknown and then bounced: the front's
	// spool holds at most alice's message, which waits for the back.
	for _, msg := range spooled(t, front) {
		if strings.Contains(msg, "nobody@") || strings.Contains(msg, "victim@") {
			t.Errorf("spooled for an unverified recipient or the forged sender:\n%s", msg)
		}
	}
}

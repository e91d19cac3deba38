package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRelayToSecondMX: mxguard in front of another MTA (here a second
// mxguard): mail accepted by the first is relayed over SMTP and lands in
// the second's Maildir, trace headers of both on top.
func TestRelayToSecondMX(t *testing.T) {
	back := startMX(t, "hostname = \"back.test\"\nlocal_domains = [\"example.net\"]\n")
	front := startMX(t, fmt.Sprintf("hostname = \"front.test\"\nlocal_domains = [\"example.net\"]\n[delivery]\nrelay = \"smtp://%s\"\n", back.addr))
	body := "Subject: through the front\r\n\r\nrelayed body\r\n"
	if err := sendGo(t, "127.0.0.1", front.addr, "a@example.org", []string{"frank@example.net", "gina@example.net"}, body); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"frank", "gina"} {
		files := waitMaildir(t, back, filepath.Join(back.dir, "data/mail/example.net", u), 1)
		got := readFile(t, files[0])
		for _, want := range []string{"by back.test (mxguard)", "by front.test (mxguard)", "relayed body"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: message lacks %q:\n%s", u, want, got)
			}
		}
	}
	front.waitLog("via=smtp://", 0)
}

// TestRelayQuotedLocalPart: an address with a quoted local part reaches
// the downstream as it was sent, quotes and all, in RCPT and in the
// Return-Path; it is not turned into invalid syntax on the way.
func TestRelayQuotedLocalPart(t *testing.T) {
	back := startMX(t, "hostname = \"back.test\"\nlocal_domains = [\"example.net\"]\n")
	front := startMX(t, fmt.Sprintf("hostname = \"front.test\"\nlocal_domains = [\"example.net\"]\n[delivery]\nrelay = \"smtp://%s\"\n", back.addr))
	c := rawClient(t, "127.0.0.1", front.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO client.test"), "250")
	expect(t, c.cmd(`MAIL FROM:<"john smith"@example.org>`), "250")
	expect(t, c.cmd(`RCPT TO:<"jane doe"@example.net>`), "250")
	expect(t, c.cmd("DATA"), "354")
	expect(t, c.cmd("Subject: quoted\r\n\r\nhi\r\n."), "250")
	expect(t, c.cmd("QUIT"), "221")
	files := waitMaildir(t, back, filepath.Join(back.dir, "data/mail/example.net/jane doe"), 1)
	if got := readFile(t, files[0]); !strings.HasPrefix(got, `Return-Path: <"john smith"@example.org>`) {
		t.Errorf("delivered:\n%s", got)
	}
	back.waitLog(`from="\"john smith\"@example.org"`, 5*time.Second)
	front.waitLog(`rcpt="\"jane doe\"@example.net"`, 5*time.Second)
}

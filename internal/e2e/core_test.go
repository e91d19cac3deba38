package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/testcert"
)

// TestDeliverNetSMTP: Go's net/smtp sends a message; it lands in the
// recipient's Maildir with our Received header on top.
func TestDeliverNetSMTP(t *testing.T) {
	m := startMX(t, "")
	body := "From: a@example.org\r\nTo: bob@localhost\r\nSubject: net/smtp\r\n\r\nhello from Go\r\n"
	if err := sendGo(t, "127.0.0.1", m.addr, "a@example.org", []string{"bob@localhost"}, body); err != nil {
		t.Fatal(err)
	}
	files := waitMaildir(t, m, filepath.Join(m.dir, "data/mail/localhost/bob"), 1)
	got := readFile(t, files[0])
	// Maildir keeps Unix line endings; net/smtp uses SMTPUTF8 when offered.
	for _, want := range []string{"Return-Path: <a@example.org>\n", "Received: from client.test ([127.0.0.1])", "by mx.test (mxguard) with UTF8SMTP id", "\nhello from Go\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("delivered message lacks %q:\n%s", want, got)
		}
	}
}

// TestDeliverSmtplib: Python's smtplib, two recipients, both delivered.
func TestDeliverSmtplib(t *testing.T) {
	python := need(t, "python3", "python3")
	m := startMX(t, "")
	script := fmt.Sprintf(`
import smtplib
from email.message import EmailMessage
msg = EmailMessage()
msg["From"] = "py@example.org"
msg["To"] = "carol@localhost, dave@localhost"
msg["Subject"] = "smtplib"
msg.set_content("hello from Python\n")
with smtplib.SMTP("127.0.0.1", %s, timeout=10) as s:
    s.send_message(msg)
`, strings.Split(m.addr, ":")[1])
	if out, err := exec.Command(python, "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	for _, u := range []string{"carol", "dave"} {
		files := waitMaildir(t, m, filepath.Join(m.dir, "data/mail/localhost", u), 1)
		if got := readFile(t, files[0]); !strings.Contains(got, "hello from Python") {
			t.Errorf("%s got:\n%s", u, got)
		}
	}
}

// TestSwaksSTARTTLS: swaks over STARTTLS; the Received header names the TLS
// version.
func TestSwaksSTARTTLS(t *testing.T) {
	swaks := need(t, "swaks", "swaks")
	// swaks needs Net::SSLeay for --tls, which Debian's swaks only
	// recommends; without it swaks fails with "TLS not available".
	if out, err := exec.Command(need(t, "perl", "perl"), "-MNet::SSLeay", "-e1").CombinedOutput(); err != nil {
		t.Fatalf("swaks cannot do STARTTLS without Net::SSLeay: install the Debian package libnet-ssleay-perl (./test.sh does): %v\n%s", err, out)
	}
	cert, key := testcert.WriteFiles(t, t.TempDir(), "mx.test")
	m := startMX(t, fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", cert, key))
	host, port, _ := strings.Cut(m.addr, ":")
	out, err := exec.Command(swaks, "--server", host, "--port", port, "--tls",
		"--from", "sw@example.org", "--to", "erin@localhost", "--helo", "swaks.test",
		"--body", "hello from swaks", "--timeout", "10").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	files := waitMaildir(t, m, filepath.Join(m.dir, "data/mail/localhost/erin"), 1)
	got := readFile(t, files[0])
	for _, want := range []string{"with ESMTPS", "(using TLSv1.3 with cipher", "hello from swaks"} {
		if !strings.Contains(got, want) {
			t.Errorf("message lacks %q:\n%s", want, got)
		}
	}
}

// TestNoOpenRelay: an untrusted client cannot relay, whatever the trick.
func TestNoOpenRelay(t *testing.T) {
	m := startMX(t, `trusted_networks = ["127.0.0.1/32"]
local_domains = ["localhost", "example.net"]
[delivery]
relay = "smtp://127.0.0.1:1"
# Eleven relay attempts would tarpit the client's replies past its
# deadline (TestTarpitThenBan covers that).
[reputation]
tarpit_below = 0
`)
	tests := []struct{ rcpt, want string }{
		{"<user@other.example>", "550 5.7.1 Relaying denied"},
		{"<user%other.example@localhost>", "550 5.7.1 Relaying denied"},
		{"<@localhost:user@other.example>", "550 5.7.1 Relaying denied"},
		{"<@localhost,@example.net:user@other.example>", "550 5.7.1 Relaying denied"},
		{"<other.example!user@localhost>", "550 5.7.1 Relaying denied"},
		{`<"user@other.example"@localhost>`, "550 5.7.1 Relaying denied"},
		{`<"user%other.example"@localhost>`, "550 5.7.1 Relaying denied"},
		{"<user@other.example.>", "501 5.1.3"},
		{"<user@localhost.>", "501 5.1.3"},
		{"<user@LOCALHOST.other.example>", "550 5.7.1 Relaying denied"},
		{"<user@[127.0.0.1]>", "550 5.7.1 Relaying denied"},
		{"<user@[IPv6:::1]>", "550 5.7.1 Relaying denied"},
		{"<user@localhost@other.example>", "501 5.1.3"},
		{"<user@LocalHost>", "250 2.1.5"},
		{"<user@EXAMPLE.NET>", "250 2.1.5"},
		{"<Postmaster>", "250 2.1.5"},
		{`<"john doe"@localhost>`, "250 2.1.5"},
	}
	c := rawClient(t, "127.0.0.2", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO attacker.test"), "250")
	expect(t, c.cmd("MAIL FROM:<spammer@example.com>"), "250")
	for _, tt := range tests {
		if got := c.cmd("RCPT TO:" + tt.rcpt); !strings.HasPrefix(got, tt.want) {
			t.Errorf("RCPT TO:%s = %q, want %q", tt.rcpt, got, tt.want)
		}
	}
	// The trusted host may relay (to the relay target).
	tc := rawClient(t, "127.0.0.1", m.addr)
	expect(t, tc.reply(), "220")
	expect(t, tc.cmd("EHLO trusted.test"), "250")
	expect(t, tc.cmd("MAIL FROM:<app@localhost>"), "250")
	expect(t, tc.cmd("RCPT TO:<user@other.example>"), "250 2.1.5")
}

// TestCheckCommand: `mxguard check` lists every error with its line.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("listen = [\"127.0.0.1:2525\"]\nbogus_key = 1\n[limits]\nmax_daemon_children = \"many\"\n"), 0o644)
	out, err := exec.Command(binary, "check", "--config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("check on a bad file: %v, want exit 1\n%s", err, out)
	}
	for _, want := range []string{"bad.toml:2", "bogus_key", "bad.toml:4", "max_daemon_children"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	nocert := filepath.Join(dir, "nocert.toml")
	os.WriteFile(nocert, []byte("tls_cert = \"missing.pem\"\ntls_key = \"missing.key\"\n"), 0o644)
	if out, err := exec.Command(binary, "check", "--config", nocert).CombinedOutput(); err == nil || !strings.Contains(string(out), "tls_cert") {
		t.Errorf("check with a missing certificate: %v\n%s", err, out)
	}
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("listen = [\"127.0.0.1:2525\"]\n"), 0o644)
	if out, err := exec.Command(binary, "check", "--config", good).CombinedOutput(); err != nil {
		t.Fatalf("check on a good file: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "mxguard ") {
		t.Fatalf("version: %v %q", err, out)
	}
}

// TestDefaults: with no config file, mxguard serves localhost on
// 127.0.0.1:2525 into ./data. That port may be in use on this machine, so
// the test runs in a network namespace of its own.
func TestDefaults(t *testing.T) {
	if !inNetNS(t) {
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(binary, "serve")
	cmd.Dir = dir
	m := &mx{t: t, dir: dir, addr: "127.0.0.1:2525"}
	m.startCmd(cmd)
	t.Cleanup(m.stop)
	if err := sendGo(t, "127.0.0.1", m.addr, "a@example.org", []string{"newcomer@localhost"}, "Subject: hi\r\n\r\nfirst message\r\n"); err != nil {
		t.Fatal(err)
	}
	waitMaildir(t, m, filepath.Join(dir, "data/mail/localhost/newcomer"), 1)
}

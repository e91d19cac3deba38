package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
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

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/dovecottest"
	"github.com/mxguard/mxguard/internal/postfixtest"
)

// downstream is a real MTA that knows its users, behind mxguard.
type downstream struct {
	name     string
	relay    string // [delivery] relay
	port     int    // the TCP port mxguard's probes and deliveries go to (0: a unix socket)
	messages func(user string) []string
	stop     func()
}

// TestVerifyProbeDownstreams: mxguard with verify = "probe" in front of
// Dovecot's LMTP (over TCP and a unix socket) and Postfix's smtpd, each
// knowing only its own users. A known user's mail is accepted and
// delivered; an unknown one is refused at RCPT with 550 5.1.1; a
// dictionary attack of 200 names from one client is refused, throttled
// and cut off without ever holding more than verify_max_probes
// connections to the downstream; the forged-sender trick gets nothing
// bounced; with the downstream stopped, RCPT gets 450 and nothing is
// accepted.
func TestVerifyProbeDownstreams(t *testing.T) {
	users := []string{"alice@example.test", "bob@example.test"}
	for _, mk := range []func(t *testing.T) downstream{
		func(t *testing.T) downstream {
			d := dovecottest.Start(t, dovecottest.Options{Users: users})
			port, _ := strconv.Atoi(d.Addr[strings.LastIndexByte(d.Addr, ':')+1:])
			return downstream{"dovecot-lmtp", "lmtp://" + d.Addr, port, d.Messages, d.Stop}
		},
		func(t *testing.T) downstream {
			d := dovecottest.Start(t, dovecottest.Options{Users: users})
			return downstream{"dovecot-lmtp-unix", "lmtp+unix://" + d.Socket, 0, d.Messages, d.Stop}
		},
		func(t *testing.T) downstream {
			p := postfixtest.Start(t, postfixtest.Options{Domains: []string{"example.test"}, Users: users})
			port, _ := strconv.Atoi(p.Addr[strings.LastIndexByte(p.Addr, ':')+1:])
			return downstream{"postfix", "smtp://" + p.Addr, port, p.Messages, p.Stop}
		},
	} {
		ds := mk(t)
		t.Run(ds.name, func(t *testing.T) { verifyAgainst(t, ds) })
	}
}

func verifyAgainst(t *testing.T, ds downstream) {
	const maxProbes = 3
	m := startMX(t, fmt.Sprintf("hostname = \"mx.test\"\nlocal_domains = [\"example.test\"]\ntrusted_networks = []\n"+
		"[limits]\nbad_rcpt_throttle = 15\nmax_bad_rcpts = 20\n"+
		"[delivery]\nrelay = %q\nverify = \"probe\"\nverify_max_probes = %d\nverify_negative_ttl = \"1s\"\n[recipients]\ncatch_all = false\n"+
		// The attack below would be tarpitted past the client's deadline
		// (TestTarpitThenBan covers that): here the probes are watched.
		"[reputation]\ntarpit_below = 0\n", ds.relay, maxProbes))

	// A known user: 250 at RCPT, delivered downstream. An unknown one: 550.
	c := rawClient(t, "127.0.0.71", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO client.test"), "250")
	expect(t, c.cmd("MAIL FROM:<sender@example.net>"), "250")
	expect(t, c.cmd("RCPT TO:<alice@example.test>"), "250 2.1.5")
	expect(t, c.cmd("RCPT TO:<carol@example.test>"), "550 5.1.1 <carol@example.test>: Recipient address rejected: User unknown")
	expect(t, c.cmd("DATA"), "354")
	expect(t, c.cmd("Subject: through "+ds.name+"\r\n\r\nhello\r\n."), "250 2.0.0 Ok: queued as")
	expect(t, c.cmd("QUIT"), "221")
	deadline := time.Now().Add(20 * time.Second)
	for len(ds.messages("alice@example.test")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("alice's message never reached %s; log:\n%s", ds.name, m.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The forged-sender trap: refused at RCPT, so nothing to bounce.
	c = rawClient(t, "127.0.0.72", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO bot.test"), "250")
	expect(t, c.cmd("MAIL FROM:<victim@other.test>"), "250")
	expect(t, c.cmd(`RCPT TO:<"x>y"@example.test>`), "550 5.1.1")
	expect(t, c.cmd("DATA"), "503")
	c.cmd("QUIT")

	// A dictionary attack: 200 names over 10 sessions at once from one
	// client. The downstream's connections are watched meanwhile.
	var peak atomic.Int64
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	if ds.port != 0 {
		watch.Go(func() {
			for {
				if n := int64(established(ds.port)); n > peak.Load() {
					peak.Store(n)
				}
				select {
				case <-stopWatch:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		})
	}
	var wg sync.WaitGroup
	var refused, cut atomic.Int64
	for s := range 10 {
		wg.Go(func() {
			c := rawClient(t, "127.0.0.73", m.addr)
			if !strings.HasPrefix(c.reply(), "220") {
				return
			}
			c.cmd("EHLO bot.test")
			c.cmd("MAIL FROM:<x@example.net>")
			for i := range 20 {
				if got := c.cmd(fmt.Sprintf("RCPT TO:<guess%d-%d@example.test>", s, i)); strings.HasPrefix(got, "550 5.1.1") {
					refused.Add(1)
				} else {
					t.Errorf("guess %d-%d: %q", s, i, got)
				}
			}
			if strings.HasPrefix(c.reply(), "421 4.7.0") {
				cut.Add(1)
			}
		})
	}
	wg.Wait()
	close(stopWatch)
	watch.Wait()
	if refused.Load() != 200 || cut.Load() != 10 {
		t.Errorf("%d of 200 guesses refused, %d of 10 sessions cut", refused.Load(), cut.Load())
	}
	m.waitLogCount("reason=too_many_bad_rcpts", 10)
	if n := m.logCount("reason=bad_rcpt_throttle"); n != 10 {
		t.Errorf("%d throttled sessions, want 10", n)
	}
	// Idle probe connections may outlive a burst: count what was open at
	// the peak, which is bounded by verify_max_probes (plus the one
	// connection alice's delivery took, which the relay may still keep).
	if ds.port != 0 && peak.Load() > maxProbes+1 {
		t.Errorf("%d connections to %s at once during the attack, want at most %d", peak.Load(), ds.name, maxProbes+1)
	}
	t.Logf("%s: at most %d connections to the downstream during the attack", ds.name, peak.Load())

	// The downstream away: 450, and nothing accepted.
	ds.stop()
	time.Sleep(1100 * time.Millisecond) // past verify_negative_ttl
	c = rawClient(t, "127.0.0.74", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO client.test"), "250")
	expect(t, c.cmd("MAIL FROM:<sender@example.net>"), "250")
	expect(t, c.cmd("RCPT TO:<dave@example.test>"), "450 4.1.1")
	expect(t, c.cmd("DATA"), "503")
	c.cmd("QUIT")
	if strings.Contains(m.logs(), "bounce queued") {
		t.Errorf("something was bounced:\n%s", m.logs())
	}
	if left := spooled(t, m); len(left) != 0 {
		t.Errorf("%d messages left in the spool: only alice's was accepted, and it was delivered: %q", len(left), left)
	}
}

// established counts the TCP connections to 127.0.0.1:port in state
// ESTABLISHED, from /proc/net/tcp (the client's side). The file is read in
// pieces, and while other programs open and close connections an entry
// can be listed twice: each connection is counted once, by its addresses.
func established(port int) int {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X", port)
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && fields[2] == want && fields[3] == "01" {
			seen[fields[1]] = true
		}
	}
	return len(seen)
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testcert"
)

// haproxy is a running HAProxy with two TCP frontends on loopback that
// forward to one backend, one with send-proxy (v1) and one with
// send-proxy-v2.
type haproxy struct {
	v1, v2 string // the frontends' addresses
}

// startHAProxy runs Debian's haproxy in the foreground in front of
// backend, on two free loopback ports, until the test ends. It connects to
// backend from 127.0.0.1.
func startHAProxy(t *testing.T, backend string) *haproxy {
	t.Helper()
	bin := need(t, "haproxy", "haproxy")
	h := &haproxy{v1: fmt.Sprintf("127.0.0.1:%d", freePort(t)), v2: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	conf := writeFile(t, t.TempDir(), "haproxy.cfg", fmt.Sprintf(`global
	maxconn 200

defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s

frontend smtp_v1
	bind %s
	default_backend mx_v1

frontend smtp_v2
	bind %s
	default_backend mx_v2

backend mx_v1
	server mx %s send-proxy source 127.0.0.1

backend mx_v2
	server mx %s send-proxy-v2 source 127.0.0.1
`, h.v1, h.v2, backend, backend))
	if out, err := exec.Command(bin, "-c", "-f", conf).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-db", "-f", conf) // -db: in the foreground
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("haproxy log:\n%s", log.String())
		}
	})
	// Ready when a frontend answers with mxguard's greeting; until then
	// the port refuses connections.
	for _, fe := range []string{h.v1, h.v2} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.7.250")}}
			c, err := d.Dial("tcp", fe)
			if err == nil {
				cl := &client{t: t, c: c, br: bufio.NewReader(c)}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				expect(t, cl.reply(), "220 mx.test")
				cl.quit()
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("haproxy exited: %s", log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy does not listen on %s after 15s: %v", fe, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return h
}

// TestProxyProtocolHAProxy: behind a real HAProxy (send-proxy and
// send-proxy-v2), mxguard limits, screens and logs each client by its own
// address, not by the proxy's: one client over its rate or its
// connections gets 421 while another is served, access-map entries and
// the greeting pause apply per client, the Received: header and ip= name
// the client, and STARTTLS works through the proxy. From the proxy's
// address a connection without a header is refused; from any other, a
// header is refused and plain SMTP is served. A reload that empties
// proxy_protocol_from serves the proxy's address as a plain client.
func TestProxyProtocolHAProxy(t *testing.T) {
	dir := t.TempDir()
	cert, key := testcert.WriteFiles(t, dir, "mx.test")
	access := writeFile(t, dir, "access", "Connect:127.0.7.9    REJECT\nGreetPause:127.0.7.8 1000\nGreetPause:127.0.7.11 1000\n")
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m := startMX(t, fmt.Sprintf(`trusted_networks = []
proxy_protocol_from = ["127.0.0.1/32"]
tls_cert = %q
tls_key = %q
access_map = %q
[limits]
client_rate = 3
client_conn = 2
[admin]
listen = %q
`, cert, key, access, admin))
	hp := startHAProxy(t, m.addr)

	t.Run("rate per client", func(t *testing.T) {
		// Three connections through v1 from 127.0.7.1; its fourth is over
		// its rate. 127.0.7.2, through v2, is not: counted on the proxy's
		// address, both would be.
		for range 3 {
			c := rawClient(t, "127.0.7.1", hp.v1)
			expect(t, c.reply(), "220 mx.test")
			c.quit()
		}
		c := rawClient(t, "127.0.7.1", hp.v1)
		expect(t, c.reply(), "421 4.3.2 Connection rate limit exceeded.")
		c = rawClient(t, "127.0.7.2", hp.v2)
		expect(t, c.reply(), "220 mx.test")
		expect(t, c.cmd("EHLO b.example"), "250 ")
		c.quit()
		m.waitLog(`rejecting connection from unknown [127.0.7.1]: ratecontrol: 4 connections`, 5*time.Second)
		m.waitLogAll(5*time.Second, "disconnect from unknown [127.0.7.2]", "ip=127.0.7.2")
	})

	t.Run("connections per client", func(t *testing.T) {
		a := rawClient(t, "127.0.7.3", hp.v2)
		expect(t, a.reply(), "220 mx.test")
		b := rawClient(t, "127.0.7.3", hp.v1)
		expect(t, b.reply(), "220 mx.test")
		c := rawClient(t, "127.0.7.3", hp.v2)
		expect(t, c.reply(), "421 4.3.2 Too many open connections.")
		d := rawClient(t, "127.0.7.4", hp.v1)
		expect(t, d.reply(), "220 mx.test")
		for _, c := range []*client{a, b, d} {
			c.quit()
		}
		m.waitLogAll(5*time.Second, "ip=127.0.7.3", "reason=conncontrol")
	})

	t.Run("access map per client", func(t *testing.T) {
		c := rawClient(t, "127.0.7.9", hp.v2)
		expect(t, c.reply(), "550 5.7.1 Access denied")
		m.waitLogAll(5*time.Second, "ip=127.0.7.9", "reason=access")
	})

	t.Run("greeting pause", func(t *testing.T) {
		// The header came before the greeting, and does not count as the
		// client talking first; what the client sends does.
		start := time.Now()
		c := rawClient(t, "127.0.7.8", hp.v2)
		expect(t, c.reply(), "220 mx.test")
		if took := time.Since(start); took < 900*time.Millisecond {
			t.Errorf("greeting after %v, want the 1 s pause of GreetPause:127.0.7.8", took)
		}
		c.quit()
		c = rawClient(t, "127.0.7.8", hp.v1)
		io.WriteString(c.c, "EHLO eager.example\r\n")
		expect(t, c.reply(), "554 mx.test not accepting messages")
		m.waitLogAll(5*time.Second, "ip=127.0.7.8", "reason=pregreet")
	})

	t.Run("greeting pause, header and early octets in one segment", func(t *testing.T) {
		// What came in the header's own read is still the client
		// talking first.
		c := rawClient(t, "127.0.0.1", m.addr)
		io.WriteString(c.c, "PROXY TCP4 127.0.7.11 127.0.0.1 5000 25\r\nEHLO eager.example\r\n")
		expect(t, c.reply(), "554 mx.test not accepting messages")
		m.waitLogAll(5*time.Second, "ip=127.0.7.11", "reason=pregreet")
	})

	t.Run("Received and STARTTLS", func(t *testing.T) {
		mail := filepath.Join(m.dir, "data/mail/localhost/bob")
		if err := sendGo(t, "127.0.7.5", hp.v2, "a@example.org", []string{"bob@localhost"}, "Subject: v2\r\n\r\nthrough v2\r\n"); err != nil {
			t.Fatal(err)
		}
		waitMaildir(t, m, mail, 1)
		c := dialFrom(t, "127.0.7.6", hp.v1)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		sc, err := smtp.NewClient(c, "mx.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Hello("tls.example"); err != nil {
			t.Fatal(err)
		}
		if err := sc.StartTLS(&tls.Config{ServerName: "mx.test", InsecureSkipVerify: true}); err != nil {
			t.Fatalf("STARTTLS through the proxy: %v", err)
		}
		if err := sc.Mail("a@example.org"); err != nil {
			t.Fatal(err)
		}
		if err := sc.Rcpt("bob@localhost"); err != nil {
			t.Fatal(err)
		}
		w, err := sc.Data()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "Subject: v1 tls\r\n\r\nthrough v1 and TLS\r\n")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		sc.Quit()
		files := waitMaildir(t, m, mail, 2)
		var all string
		for _, f := range files {
			all += readFile(t, f)
		}
		for _, want := range []string{
			"Received: from client.test ([127.0.7.5])",
			"Received: from tls.example ([127.0.7.6])\n\tby mx.test (mxguard) with UTF8SMTPS id",
			"\n\t(using TLS",
		} {
			if !strings.Contains(all, want) {
				t.Errorf("the messages lack %q:\n%s", want, all)
			}
		}
		m.waitLogAll(5*time.Second, "accepted", "ip=127.0.7.6")
	})

	t.Run("header from the client behind the proxy", func(t *testing.T) {
		c := rawClient(t, "127.0.7.10", hp.v1)
		expect(t, c.reply(), "220 mx.test")
		io.WriteString(c.c, "PROXY TCP4 192.0.2.66 127.0.0.1 4000 25\r\nEHLO spoof.example\r\n")
		c.closed()
		m.waitLogAll(5*time.Second, "rejecting connection from unknown [127.0.7.10]: PROXY protocol header from a client behind the proxy",
			"ip=127.0.7.10", "reason=proxy_protocol")
	})

	t.Run("no header from the proxy's address", func(t *testing.T) {
		// Silent: closed after the header's 3 s, with no greeting.
		start := time.Now()
		c := rawClient(t, "127.0.0.1", m.addr)
		c.closed()
		if took := time.Since(start); took < 2900*time.Millisecond {
			t.Errorf("closed after %v, before the header's timeout", took)
		}
		m.waitLogAll(5*time.Second, "rejecting connection from unknown [127.0.0.1]: no complete PROXY protocol header within 3s",
			"ip=127.0.0.1", "reason=proxy_protocol")
		// SMTP at once: closed at once, unanswered.
		c = rawClient(t, "127.0.0.1", m.addr)
		io.WriteString(c.c, "EHLO direct.example\r\n")
		c.closed()
		m.waitLogAll(5*time.Second, "no PROXY protocol header: the connection starts with", "EHLO direct.", "ip=127.0.0.1")
	})

	t.Run("LOCAL header from the proxy's address", func(t *testing.T) {
		// A v2 LOCAL header (a proxy's health check): served as itself.
		c := rawClient(t, "127.0.0.1", m.addr)
		c.c.Write(v2Local())
		expect(t, c.reply(), "220 mx.test")
		expect(t, c.cmd("EHLO check.example"), "250 ")
		c.quit()
		m.waitLogAll(5*time.Second, "disconnect from unknown [127.0.0.1]", "ip=127.0.0.1")
	})

	t.Run("other addresses", func(t *testing.T) {
		// Outside proxy_protocol_from: plain SMTP is served...
		c := rawClient(t, "127.0.7.20", m.addr)
		expect(t, c.reply(), "220 mx.test")
		expect(t, c.cmd("EHLO direct.example"), "250 ")
		c.quit()
		// ...and a header is refused: it would pass for another client.
		c = rawClient(t, "127.0.7.21", m.addr)
		io.WriteString(c.c, "PROXY TCP4 192.0.2.66 127.0.0.1 4000 25\r\n")
		expect(t, c.reply(), "220 mx.test")
		c.closed()
		m.waitLogAll(5*time.Second, "rejecting connection from unknown [127.0.7.21]: PROXY protocol header from an address not in proxy_protocol_from",
			"ip=127.0.7.21", "reason=proxy_protocol")
	})

	// The proxy's address drew no limit and no refusal but the ones above
	// for its missing header; every refusal is counted.
	for _, line := range strings.Split(m.logs(), "\n") {
		if strings.Contains(line, "ip=127.0.0.1 ") && strings.Contains(line, "reason=") && !strings.Contains(line, "reason=proxy_protocol") {
			t.Errorf("a refusal of the proxy's own address: %s", line)
		}
	}
	if n := len(regexp.MustCompile(`(?m)reason=proxy_protocol`).FindAllString(m.logs(), -1)); n != 4 {
		t.Errorf("%d log lines with reason=proxy_protocol, want 4", n)
	}
	body := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []string{
		`mxguard_refusals_total{reason="proxy_protocol",stage="connect"} 4`,
		`mxguard_refusals_total{reason="ratecontrol",stage="connect"} 1`,
		`mxguard_refusals_total{reason="conncontrol",stage="connect"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A reload takes the list away: the proxy's address is then a client
	// like any other, served without a header.
	conf := readFile(t, m.config)
	conf = strings.Replace(conf, `proxy_protocol_from = ["127.0.0.1/32"]`, "proxy_protocol_from = []", 1)
	writeFile(t, filepath.Dir(m.config), filepath.Base(m.config), conf)
	m.hup("configuration reloaded")
	c := rawClient(t, "127.0.0.1", m.addr)
	expect(t, c.reply(), "220 mx.test")
	c.quit()
}

// v2Local is a PROXY v2 header with the LOCAL command and no addresses:
// the signature, version 2 and LOCAL, family UNSPEC, length 0.
func v2Local() []byte {
	return []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
}

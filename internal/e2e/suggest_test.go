package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
)

// TestSuggest runs the seed's method end to end: a server takes traffic
// (senders that deliver mail, some of them with two sessions at once, a
// dozen idle sessions held for a few seconds, and a dial-up pool that
// opens connections faster than client_rate allows); stopped, it leaves
// its day in <data_dir>/stats.json; `mxguard suggest` proposes from it
// max_daemon_children (3 × the p95 of the sessions open, at least 30), the
// client limits, and hosts.deny lines for the pool; patch(1) applies the
// diff, `mxguard check` passes, and the restarted server refuses the pool
// by hosts.deny. The same server's log read with --log proposes the same
// hosts.deny lines.
func TestSuggest(t *testing.T) {
	patch := need(t, "patch", "patch")
	hosts := map[string]string{}
	for i := 1; i <= 4; i++ {
		hosts[fmt.Sprintf("127.0.9.%d", i)] = fmt.Sprintf("mail-%c.example.org", 'a'+i)
	}
	for i := 1; i <= 5; i++ {
		hosts[fmt.Sprintf("127.0.3.%d", i)] = fmt.Sprintf("host-127-0-3-%d.dsl.example", i)
	}
	dns := hostsDNS(t, hosts)
	m := startMX(t, fmt.Sprintf(`trusted_networks = []
resolver = %q
[limits]
client_rate = 3
`, dns.Addr))

	// A dozen sessions held open while the sampler counts them.
	var held []*client
	for i := range 12 {
		c := rawClient(t, fmt.Sprintf("127.0.8.%d", i+1), m.addr)
		expect(t, c.reply(), "220 ")
		held = append(held, c)
	}
	m.waitAdmitted(12)
	// Senders that deliver: two sessions open at once each, a message on
	// each.
	for i := 1; i <= 4; i++ {
		src := fmt.Sprintf("127.0.9.%d", i)
		a, b := rawClient(t, src, m.addr), rawClient(t, src, m.addr)
		expect(t, a.reply(), "220 ")
		expect(t, b.reply(), "220 ")
		for _, c := range []*client{a, b} {
			expect(t, c.cmd("HELO "+hosts[src]), "250")
			expect(t, c.cmd("MAIL FROM:<news@example.org>"), "250")
			expect(t, c.cmd("RCPT TO:<admin@localhost>"), "250")
			expect(t, c.cmd("DATA"), "354")
			expect(t, c.cmd("Subject: news\r\n\r\nhello\r\n."), "250")
			expect(t, c.cmd("QUIT"), "221")
		}
	}
	// The pool: six connections each, three over client_rate.
	for i := 1; i <= 5; i++ {
		src := fmt.Sprintf("127.0.3.%d", i)
		for j := range 6 {
			c := rawClient(t, src, m.addr)
			if j < 3 {
				expect(t, c.reply(), "220 ")
				expect(t, c.cmd("QUIT"), "221")
			} else {
				expect(t, c.reply(), "421 4.3.2 Connection rate limit exceeded.")
			}
		}
	}
	// Samples of the held sessions: at least three whole seconds more.
	time.Sleep(3500 * time.Millisecond)
	for _, c := range held {
		expect(t, c.cmd("QUIT"), "221")
	}
	m.stop()
	m.mu.Lock()
	logText := m.log.String()
	m.mu.Unlock()

	// The day, as the server left it.
	days, err := stats.Load(filepath.Join(m.dir, "data", stats.FileName))
	if err != nil || len(days) == 0 {
		t.Fatalf("the server's statistics: %v, %d days", err, len(days))
	}
	var d stats.Day
	for _, x := range days { // a run across midnight has two
		d.Merge(x)
	}
	p95 := d.Concurrency.Quantile(0.95)
	if p95 < 12 || d.Messages != 8 || d.Refused[reason.RateControl] != 15 || d.Accepted < 12+8+30 {
		t.Errorf("p95 of sessions open %d (samples %v), messages %d, refused %v, accepted %d; want at least 12, 8, 15 ratecontrol, 50",
			p95, d.Concurrency, d.Messages, d.Refused, d.Accepted)
	}
	if d.ClientConn.Max() != 2 || d.ClientRate.Max() != 2 {
		t.Errorf("the senders' busiest window %d, most open %d; want 2, 2", d.ClientRate.Max(), d.ClientConn.Max())
	}
	var pool, senders int64
	for _, s := range d.Suffixes {
		switch s.Key {
		case "dsl.example":
			pool = s.Refusals()
		case "example.org":
			senders = s.Delivered
		}
	}
	if pool != 15 || senders != 8 {
		t.Errorf("suffixes %+v: want dsl.example refused 15 times, example.org delivering 8", d.Suffixes)
	}

	// The proposal from the statistics.
	out, err := m.mxctl("suggest", "--deny-min-refusals", "10")
	if err != nil {
		t.Fatalf("mxguard suggest: %v\n%s", err, out)
	}
	diff := out + "\n"
	t.Logf("mxguard suggest:\n%s", diff)
	want := max(30, 3*p95)
	for _, line := range []string{
		fmt.Sprintf("+max_daemon_children = %d\n", want),
		"+client_rate = 5\n", // 2 × 2, at least 5
		"+client_conn = 4\n", // 2 × 2
		"+connection_rate_throttle = ",
		"+mxguard: .dsl.example\n",
		"+mxguard: 127.0.3.\n",
		"+hosts_deny = \"hosts.deny\"\n", // beside the configuration
		"--- /dev/null\n+++ " + filepath.Join(m.dir, "hosts.deny") + "\n",
	} {
		if !strings.Contains(diff, line) {
			t.Errorf("the proposal lacks %q:\n%s", line, diff)
		}
	}
	if !regexp.MustCompile(fmt.Sprintf(`\+# mxguard suggest: 3 × %d \(p95 of \d+ samples of the sessions open`, p95)).MatchString(diff) {
		t.Errorf("no figures behind max_daemon_children:\n%s", diff)
	}
	if strings.Contains(diff, "example.org\n") || strings.Contains(diff, "127.0.9.") || strings.Contains(diff, "127.0.8.") {
		t.Errorf("a line against the senders:\n%s", diff)
	}

	// Applied, checked, in force.
	cmd := exec.Command(patch, "-d", "/", "-p1", "--batch", "--forward")
	cmd.Stdin = strings.NewReader(diff)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("patch: %v\n%s", err, out)
	}
	if out, err := m.mxctl("check"); err != nil || !strings.HasSuffix(out, ": ok") {
		t.Fatalf("mxguard check after the patch: %v\n%s\n%s", err, out, readFile(t, m.config))
	}
	conf := readFile(t, m.config)
	if !strings.Contains(conf, fmt.Sprintf("\nmax_daemon_children = %d\n", want)) {
		t.Errorf("the patched configuration:\n%s", conf)
	}
	m.restart()
	c, line, _ := greet(t, "127.0.3.4", m.addr)
	expect(t, line, "550 5.7.1 Access denied")
	c.c.Close()
	m.waitLogAll(10*time.Second, "tcpwrappers (host-127-0-3-4.dsl.example, 127.0.3.4) rejection")

	// The first run's log, read back: the same pool (proposed against a
	// configuration of its own: the patched one denies the pool already).
	other := t.TempDir()
	logFile := writeFile(t, other, "mxguard.log", logText)
	cfg := writeFile(t, other, "mxguard.toml", "trusted_networks = []\n")
	fromLog, err := exec.Command(binary, "suggest", "--config", cfg, "--log", logFile, "--deny-min-refusals", "10").Output()
	if err != nil {
		t.Fatalf("mxguard suggest --log: %v\n%s", err, fromLog)
	}
	for _, line := range []string{"+mxguard: .dsl.example\n", "+mxguard: 127.0.3.\n", "+max_daemon_children = ", "+client_conn = 4\n"} {
		if !bytes.Contains(fromLog, []byte(line)) {
			t.Errorf("the proposal from the log lacks %q:\n%s", line, fromLog)
		}
	}
}

// TestSuggestStatsUnreadable: a statistics file the server cannot read is
// moved aside, never overwritten, and a new one written.
func TestSuggestStatsUnreadable(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(data, stats.FileName)
	if err := os.WriteFile(path, []byte("{\"version\":1,\"days\":[{\"date\":\"not a date\"}]}"), 0o640); err != nil {
		t.Fatal(err)
	}
	m := startMX(t, fmt.Sprintf("data_dir = %q\n", data))
	m.waitLogAll(10*time.Second, "traffic statistics not read (moved to "+path+".bad)", "not YYYY-MM-DD")
	c := rawClient(t, "127.0.0.1", m.addr)
	expect(t, c.reply(), "220 ")
	expect(t, c.cmd("QUIT"), "221")
	time.Sleep(2500 * time.Millisecond) // a sample or two of the load: one a second
	m.stop()
	if b := readFile(t, path+".bad"); !strings.Contains(b, "not a date") {
		t.Errorf("the unreadable file was not kept: %q", b)
	}
	days, err := stats.Load(path)
	if err != nil || len(days) == 0 || days[len(days)-1].Sessions != 1 {
		t.Errorf("the new file: %v, %+v", err, days)
	}
	if out, err := m.mxctl("suggest"); err != nil || !strings.Contains(out, "+max_daemon_children = 30") {
		t.Errorf("mxguard suggest: %v\n%s", err, out)
	}
	// And with nothing to go by, it says so.
	os.Remove(path)
	out, err := m.mxctl("suggest")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, "no traffic statistics at "+path) {
		t.Errorf("without statistics: %v\n%s", err, out)
	}
}

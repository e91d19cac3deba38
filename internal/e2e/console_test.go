package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The console tests drive Debian's chromium, headless, through the
// DevTools protocol (chromedp, over a pipe: no port).

const consoleToken = "e2e-console-token-0123456789"

// artifactsEnv names a directory where tests leave what a person may want
// to look at afterwards (the console's screenshots); without it they go to
// the test's ArtifactDir (kept under -outputdir with go test -artifacts,
// else removed with the test).
const artifactsEnv = "MXGUARD_ARTIFACTS"

// startConsoleMX starts mxguard with the console on (its token in a
// file), names for the flooding addresses, and bans possible but never
// reached by the test's flood; it returns the server and the console's
// URL.
func startConsoleMX(t *testing.T, hosts map[string]string) (*mx, string) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "console-token")
	if err := os.WriteFile(tokenFile, []byte(consoleToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Talking before the greeting is refused as soon as it is read, so a
	// long pause costs the flood nothing and keeps quiet clients in it.
	m := startMX(t, fmt.Sprintf(`trusted_networks = ["127.0.0.1/32"]
resolver = %q
[limits]
greet_pause = "20s"
[reputation]
tarpit_below = 0
ban_below = -100000
[admin]
listen = "127.0.0.1:0"
console = true
console_token_file = %q
`, hostsDNS(t, hosts).Addr, tokenFile))
	sub := adminAddrRE.FindStringSubmatch(m.waitLog(`msg="admin listening"`, 10*time.Second))
	if sub == nil {
		t.Fatalf("no admin address in the log:\n%s", m.logs())
	}
	return m, "http://" + sub[1] + "/console/"
}

var adminAddrRE = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

// browser starts a headless chromium for the test, ended with it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := need(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1400, 1000),
		// As root (tests here and in CI), chromium runs only without its
		// sandbox; the pages it loads are the test's own.
		chromedp.NoSandbox,
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTime := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTime(); cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// flooder talks before the greeting from src, again and again, until
// stopped (at most max connections, a pause between each), and keeps the
// first line of each reply by its code.
type flooder struct {
	src  string
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	replies map[string]int // by the first three octets of the reply
}

func flood(t *testing.T, src, addr string, pause time.Duration, max int) *flooder {
	f := &flooder{src: src, stop: make(chan struct{}), done: make(chan struct{}), replies: map[string]int{}}
	go func() {
		defer close(f.done)
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		for range max {
			select {
			case <-f.stop:
				return
			case <-time.After(pause):
			}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte("EHLO flood.test\r\n"))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			f.mu.Lock()
			f.replies[line[:min(3, len(line))]]++
			f.mu.Unlock()
		}
	}()
	t.Cleanup(f.end)
	return f
}

func (f *flooder) end() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

func (f *flooder) count(code string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replies[code]
}

// waitFor polls a JavaScript expression in the page until it is truthy,
// and returns it as a string; on timeout the test fails, saying what it
// waited for and with a screenshot.
func waitFor(t *testing.T, ctx context.Context, what, expr string, d time.Duration) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Poll[string](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		screenshot(t, ctx, "timeout")
		t.Fatalf("waiting %v for %s: %v", d, what, err)
	}
	return v
}

// screenshot saves the whole page as name.png in the artifacts directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	dir := os.Getenv(artifactsEnv)
	if dir == "" {
		dir = t.ArtifactDir()
	} else {
		dir = filepath.Join(dir, t.Name())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	file := filepath.Join(dir, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s", file)
}

// rowJS is the JavaScript of the latest reason in the row of prefix in a
// console table, "" while there is no such row.
func rowJS(table, prefix, what string) string {
	return fmt.Sprintf(`(() => { const r = document.querySelector('#%s tr[data-prefix="%s"]'); return r ? %s : ''; })()`, table, prefix, what)
}

// TestConsoleDenyFlood: an operator watches the console in a browser
// while three addresses flood mxguard with clients that talk before the
// greeting; the heaviest appears at the top of the minute's offenders with
// reason pregreet, its /24 and its reverse-DNS suffix too, and the quiet
// clients held in the greeting pause are counted. A click on deny (after
// typing the token) puts it in the deny list at once: its next
// connections get 550 at connect (logged with reason=deny_list), the page
// shows it denied and listed, and the other two go on as before.
func TestConsoleDenyFlood(t *testing.T) {
	hosts := map[string]string{"127.0.3.7": "h7.dyn.flood.test", "127.0.3.8": "h8.dyn.flood.test", "127.0.3.9": "h9.dyn.flood.test"}
	m, console := startConsoleMX(t, hosts)
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(console)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the live stream", `document.getElementById('live').className.includes('on') && 'on'`, 30*time.Second)

	// Two clients wait quietly in the greeting pause.
	for range 2 {
		dialFrom(t, "127.0.3.20", m.addr)
	}
	waitFor(t, ctx, "the clients in the greeting pause", `Number(document.getElementById('greet-pause').textContent) >= 2 && 'yes'`, 15*time.Second)
	heavy := flood(t, "127.0.3.7", m.addr, 20*time.Millisecond, 3000)
	flood(t, "127.0.3.8", m.addr, 300*time.Millisecond, 300)
	flood(t, "127.0.3.9", m.addr, 300*time.Millisecond, 300)

	reasonJS := rowJS("m-ips", "127.0.3.7/32", "r.dataset.reason")
	// The top row, once the heavy flooder leads by a clear margin.
	topJS := `(() => { const r = document.querySelector('#m-ips tbody tr'); return r && r.dataset.prefix === '127.0.3.7/32' && Number(r.querySelector('td.count').textContent) >= 20 && r.dataset.reason; })()`
	if got := waitFor(t, ctx, "127.0.3.7 on top of the minute's offenders", topJS, 60*time.Second); got != "pregreet" {
		t.Errorf("127.0.3.7's reason is %q, want pregreet", got)
	}
	waitFor(t, ctx, "the flood's /24", rowJS("m-nets", "127.0.3.0/24", "r.dataset.reason"), 10*time.Second)
	if got := waitFor(t, ctx, "the flood's names", `(() => { const r = document.querySelector('#m-names tr[data-suffix=".dyn.flood.test"]'); return r ? r.dataset.reason : ''; })()`, 10*time.Second); got != "pregreet" {
		t.Errorf(".dyn.flood.test's reason is %q", got)
	}
	if s := m.logs(); strings.Contains(s, "ip=127.0.3.7 reason=deny_list") {
		t.Fatal("denied before the click")
	}

	screenshot(t, ctx, "console-flood")

	// The operator types the token and clicks deny on the row.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#token"), consoleToken),
		chromedp.Click(chromedp.CSS(`#m-ips tr[data-prefix="127.0.3.7/32"] button.deny`)),
	); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, ctx, "the deny's result", `document.getElementById('notice').textContent`, 15*time.Second); !strings.HasPrefix(got, "OK ") || !strings.Contains(got, "127.0.3.7/32") {
		t.Fatalf("the deny's result: %q", got)
	}

	// Effective at once: refused at connect, with its log line.
	c := rawClient(t, "127.0.3.7", m.addr)
	expect(t, c.reply(), "550 5.7.1 Access denied")
	m.waitLog("ip=127.0.3.7 reason=deny_list", 10*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for heavy.count("550") == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if heavy.count("550") == 0 {
		t.Errorf("the flood from 127.0.3.7 is not refused at connect: replies %v", heavy.replies)
	}
	rawClient(t, "127.0.3.8", m.addr).c.Write([]byte("EHLO x\r\n"))
	m.waitLog("ip=127.0.3.8 reason=pregreet", 10*time.Second)

	// And the console says so: the row is marked denied, the deny list
	// holds it, and the refusals it now draws are deny_list.
	waitFor(t, ctx, "127.0.3.7 in the deny list", `document.querySelector('#denied li[data-prefix="127.0.3.7/32"]') && 'yes'`, 10*time.Second)
	waitFor(t, ctx, "127.0.3.7 shown denied", rowJS("m-ips", "127.0.3.7/32", "r.classList.contains('denied') && r.querySelector('td.state').textContent"), 10*time.Second)
	if got := waitFor(t, ctx, "127.0.3.7's refusals as deny_list", reasonJS+` === 'deny_list' && 'deny_list'`, 15*time.Second); got != "deny_list" {
		t.Errorf("latest reason %q", got)
	}
	if got := waitFor(t, ctx, "the refusals chart", `(() => { const l = [...document.querySelectorAll('#chart-refusals .legend li')].map(li => li.textContent); return l.length ? l.join('|') : ''; })()`, 5*time.Second); !strings.Contains(got, "pregreet") || !strings.Contains(got, "deny_list") {
		t.Errorf("the refusals chart's legend: %q", got)
	}
	screenshot(t, ctx, "console-after-deny")
}

// TestConsoleRefusesWithoutToken: a click on deny without the token is
// refused (and said so on the page), as is a form another site's page
// sends to the console with the right token: the client stays admitted.
func TestConsoleRefusesWithoutToken(t *testing.T) {
	m, console := startConsoleMX(t, map[string]string{"127.0.4.7": "h7.pool.flood.test"})
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(console)); err != nil {
		t.Fatal(err)
	}
	flood(t, "127.0.4.7", m.addr, 50*time.Millisecond, 2000)
	waitFor(t, ctx, "127.0.4.7 in the offenders", rowJS("m-ips", "127.0.4.7/32", "r.dataset.reason"), 60*time.Second)

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#m-ips tr[data-prefix="127.0.4.7/32"] button.deny`))); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, ctx, "the refusal", `document.getElementById('notice').textContent`, 15*time.Second); !strings.HasPrefix(got, "ERR no token") {
		t.Errorf("without the token: %q", got)
	}
	screenshot(t, ctx, "console-without-token")
	m.waitLog("console: state change refused", 5*time.Second)

	// Another site's page posts the form itself, token and all: the
	// browser says where it comes from, and the console refuses it.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%sact"><input name="token" value="%s"><input name="do" value="deny 127.0.4.7"></form><script>document.forms[0].submit()</script>`,
			console, consoleToken)
	}))
	defer evil.Close()
	if err := chromedp.Do(ctx, chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1))); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, ctx, "the console's answer to the other site's form", `(() => { const r = document.getElementById('result'); return r ? r.textContent : ''; })()`, 15*time.Second); !strings.Contains(got, "cross-origin request refused") {
		t.Errorf("another site's form: %q", got)
	}

	// Nothing was denied: the client is still refused for what it does.
	c := rawClient(t, "127.0.4.7", m.addr)
	c.c.Write([]byte("EHLO x\r\n"))
	expect(t, c.reply(), "554 mx.test not accepting messages")
	if strings.Contains(m.logs(), "reason=deny_list") {
		t.Errorf("a deny got through:\n%s", m.logs())
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("the browser's time ran out")
	}
}

// TestBanCommand: `mxguard ban` bans a network of the running server for
// the time given (after the target, as typed), or [reputation] ban_time:
// its clients get 554 at connect, `mxguard bans` lists it as the
// operator's, and unban lifts it. With no server running it changes
// nothing and says so.
func TestBanCommand(t *testing.T) {
	t.Parallel()
	m := startMXLoopback(t, "trusted_networks = [\"127.0.0.1/32\"]\n[reputation]\ntarpit_below = 0\nban_below = -100000\nban_time = \"3h\"\n")
	out, err := m.mxctl("ban", "127.0.6.5/24", "--for", "2d")
	if err != nil || !strings.Contains(out, "network 127.0.6.0/24") || !strings.Contains(out, "banned 127.0.6.0/24 for 2d") {
		t.Fatalf("mxguard ban: %v\n%s", err, out)
	}
	c, line, _ := greet(t, "127.0.6.9", m.addr)
	expect(t, line, "554 5.7.1 Access denied")
	c.closed()
	m.waitLog("ip=127.0.6.9 reason=banned", 10*time.Second)
	if out, err := m.mxctl("ban", `time=2026-11-29T10:00:00Z level=INFO msg="rejecting commands from unknown [127.0.7.3] due to pre-greeting traffic" ip=127.0.7.3 reason=pregreet`); err != nil ||
		!strings.Contains(out, "client 127.0.7.3 (ip= field of an mxguard log line, reason=pregreet)") || !strings.Contains(out, "for 3h") {
		t.Errorf("mxguard ban of a log line, for ban_time: %v\n%s", err, out)
	}
	out, err = m.mxctl("bans")
	if err != nil || !regexp.MustCompile(`(?m)^ +127\.0\.6\.0/24 +until \S+ +control +by operator +1 hits$`).MatchString(out) ||
		!strings.Contains(out, "127.0.7.3/32") {
		t.Errorf("mxguard bans: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"ban"}, {"ban", "127.0.6.1", "127.0.6.2"}, {"ban", "127.0.6.1", "--for", "soon"}, {"ban", "--for", "0s", "127.0.6.1"}} {
		if out, err := m.mxctl(bad...); err == nil {
			t.Errorf("mxguard %v succeeded: %s", bad, out)
		}
	}
	if out, err := m.mxctl("unban", "127.0.6.0/24"); err != nil || !strings.Contains(out, "lifted 1 bans") {
		t.Errorf("mxguard unban: %v\n%s", err, out)
	}
	c, line, _ = greet(t, "127.0.6.9", m.addr)
	expect(t, line, "220")
	c.quit()

	m.halt()
	if out, err := m.mxctl("ban", "127.0.6.9"); err == nil || !strings.Contains(out, "nothing was changed") {
		t.Errorf("mxguard ban with no server: %v\n%s", err, out)
	}
}

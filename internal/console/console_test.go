package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/console"
	"github.com/mxguard/mxguard/internal/dnstest"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/server"
)

const token = "test-token-0123456789"

// rig is a console over a real server (built in a directory of the test's
// own, its resolver a DNS server on loopback) and metrics of its own,
// which the test fills as refusals would.
type rig struct {
	t   testing.TB
	srv *server.Server
	m   *metrics.Metrics
	h   http.Handler
	log *lockedWriter
	// skew is added to the console's clock: a test moves it on to make
	// the console take its figures again at once.
	skew atomic.Int64
}

func newRig(t testing.TB, tok string) *rig {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "mxguard.toml")
	dns := dnstest.Start(t,
		"9.5.0.127.in-addr.arpa. 60 IN PTR h9.dyn.flood.test.", "h9.dyn.flood.test. 60 IN A 127.0.5.9")
	toml := "hostname = \"mx.test\"\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\nresolver = \"" + dns.Addr + "\"\n"
	if err := os.WriteFile(cfgFile, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	log := &lockedWriter{}
	logger := slog.New(slog.NewTextHandler(log, nil))
	srv, err := server.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	r := &rig{t: t, srv: srv, m: metrics.New(), log: log}
	r.h = console.New(console.Config{Metrics: r.m, Server: srv, Log: logger,
		Token: func() (string, error) { return tok, nil },
		Now:   func() time.Time { return time.Now().Add(time.Duration(r.skew.Load())) }})
	return r
}

// later moves the console's clock past the snapshot it holds.
func (r *rig) later() { r.skew.Add(int64(2 * time.Second)) }

// lockedWriter is the server's log: written by its goroutines, read by
// the test.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// post sends an action as the page's form would, with extra headers.
func (r *rig) post(form url.Values, header ...string) (int, string) {
	r.t.Helper()
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8025/console/act", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return r.serve(req)
}

func (r *rig) get(path string) (int, string) {
	r.t.Helper()
	return r.serve(httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8025"+path, nil))
}

func (r *rig) serve(req *http.Request) (int, string) {
	w := httptest.NewRecorder()
	r.h.ServeHTTP(w, req)
	b, _ := io.ReadAll(w.Body)
	return w.Code, string(b)
}

func (r *rig) denied(p string) bool {
	for _, d := range r.srv.ConsoleState().Denied {
		if d.String() == p {
			return true
		}
	}
	return false
}

// TestTokenRequired: a state change without the token, or with a wrong
// one, is refused (403) and changes nothing; with the token, in the form
// or as a bearer header, it is made at once.
func TestTokenRequired(t *testing.T) {
	r := newRig(t, token)
	for _, tc := range []struct {
		name   string
		form   url.Values
		header []string
	}{
		{"no token", url.Values{"do": {"deny 192.0.2.9"}}, nil},
		{"empty token", url.Values{"do": {"deny 192.0.2.9"}, "token": {""}}, nil},
		{"wrong token", url.Values{"do": {"deny 192.0.2.9"}, "token": {token + "x"}}, nil},
		{"a prefix of the token", url.Values{"do": {"deny 192.0.2.9"}, "token": {token[:10]}}, nil},
		{"wrong bearer", url.Values{"do": {"deny 192.0.2.9"}}, []string{"Authorization", "Bearer nope-nope-nope-nope"}},
		{"bearer wins over the form", url.Values{"do": {"deny 192.0.2.9"}, "token": {token}}, []string{"Authorization", "Bearer nope-nope-nope-nope"}},
	} {
		code, body := r.post(tc.form, tc.header...)
		if code != http.StatusForbidden || !strings.HasPrefix(body, "ERR ") {
			t.Errorf("%s: %d %q, want 403", tc.name, code, body)
		}
		if r.denied("192.0.2.9/32") {
			t.Fatalf("%s: the client was denied", tc.name)
		}
	}
	if !strings.Contains(r.log.String(), "console: state change refused") {
		t.Error("refusals are not logged")
	}
	if code, body := r.post(url.Values{"do": {"deny 192.0.2.9"}, "token": {token}}); code != http.StatusOK || !strings.HasPrefix(body, "OK ") {
		t.Fatalf("with the token: %d %q", code, body)
	}
	if !r.denied("192.0.2.9/32") {
		t.Error("not denied with the token")
	}
	if code, body := r.post(url.Values{"do": {"trust 198.51.100.0/24"}}, "Authorization", "Bearer "+token); code != http.StatusOK {
		t.Errorf("bearer: %d %q", code, body)
	}
	if code, body := r.post(url.Values{"do": {"check"}, "token": {token}}); code != http.StatusOK || !strings.Contains(body, "the token is right") {
		t.Errorf("check: %d %q", code, body)
	}
}

// TestReadOnly: without a configured token nothing can be changed, and
// the page offers no buttons.
func TestReadOnly(t *testing.T) {
	r := newRig(t, "")
	r.m.Refused(reason.Pregreet, netip.MustParseAddr("192.0.2.9"), "")
	for _, tok := range []string{"", token} {
		if code, body := r.post(url.Values{"do": {"deny 192.0.2.9"}, "token": {tok}}); code != http.StatusForbidden || !strings.Contains(body, "read-only") {
			t.Errorf("token %q: %d %q", tok, code, body)
		}
	}
	if r.denied("192.0.2.9/32") {
		t.Error("denied on a read-only console")
	}
	_, page := r.get("/console/")
	if strings.Contains(page, "<button") || !strings.Contains(page, "Read-only") || !strings.Contains(page, `data-prefix="192.0.2.9/32"`) {
		t.Errorf("read-only page:\n%s", page)
	}
}

// TestCrossOrigin: a state change sent from another site's page is
// refused, token or not; from the console's own page it is made.
func TestCrossOrigin(t *testing.T) {
	r := newRig(t, token)
	form := url.Values{"do": {"deny 192.0.2.9"}, "token": {token}}
	for _, h := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"}, // another port or subdomain is another origin
		{"Origin", "http://evil.example"},
		{"Origin", "http://127.0.0.1:9999"},
		{"Origin", "null"},
	} {
		if code, _ := r.post(form, h...); code != http.StatusForbidden {
			t.Errorf("%s: %s: %d, want 403", h[0], h[1], code)
		}
		if r.denied("192.0.2.9/32") {
			t.Fatalf("%s: %s: denied", h[0], h[1])
		}
	}
	if code, body := r.post(form, "Sec-Fetch-Site", "same-origin", "Origin", "http://127.0.0.1:8025"); code != http.StatusOK {
		t.Errorf("same origin: %d %q", code, body)
	}
	if !r.denied("192.0.2.9/32") {
		t.Error("not denied from the same origin")
	}
}

// TestGetChangesNothing: no GET changes state, whatever it carries.
func TestGetChangesNothing(t *testing.T) {
	r := newRig(t, token)
	q := "?do=deny+192.0.2.9&token=" + token
	if code, _ := r.get("/console/act" + q); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /console/act: %d, want 405", code)
	}
	for _, p := range []string{"/console/" + q, "/console/static/console.js" + q} {
		if code, _ := r.get(p); code != http.StatusOK {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	// Nor does a POST's token in the URL count.
	if code, _ := r.post(url.Values{"do": {"deny 192.0.2.9"}}, "X-Unused", ""); code != http.StatusForbidden {
		t.Errorf("POST without a token: %d", code)
	}
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8025/console/act"+q, nil)
	if code, _ := r.serve(req); code != http.StatusForbidden {
		t.Errorf("POST with the token in the URL: %d, want 403", code)
	}
	if r.denied("192.0.2.9/32") {
		t.Error("a GET or a token in the URL denied the client")
	}
}

// TestActions: ban for a time, trust and unban reach the server; a bad
// action or duration is refused with why.
func TestActions(t *testing.T) {
	r := newRig(t, token)
	act := func(do string) (int, string) {
		t.Helper()
		return r.post(url.Values{"do": {do}, "token": {token}})
	}
	if code, body := act("ban 1d 192.0.2.0/24"); code != http.StatusOK || !strings.Contains(body, "banned 192.0.2.0/24 for 1d") {
		t.Fatalf("ban: %d %q", code, body)
	}
	bans := r.srv.ConsoleState().Bans
	if len(bans) != 1 || bans[0].Prefix.String() != "192.0.2.0/24" || time.Until(bans[0].Expires) < 23*time.Hour {
		t.Errorf("bans: %+v", bans)
	}
	if code, _ := act("unban 192.0.2.0/24"); code != http.StatusOK || len(r.srv.ConsoleState().Bans) != 0 {
		t.Errorf("unban: %d, bans %+v", code, r.srv.ConsoleState().Bans)
	}
	for _, bad := range []string{"", "ban 192.0.2.1", "ban 0s 192.0.2.1", "ban 30s 192.0.2.1", "ban 400d 192.0.2.1",
		"ban 1h not-an-address", "deny", "deny 192.0.2.1 192.0.2.2", "shutdown", "deny 192.0.2.1/33"} {
		if code, body := act(bad); code != http.StatusBadRequest || !strings.HasPrefix(body, "ERR ") {
			t.Errorf("%q: %d %q, want 400", bad, code, body)
		}
	}
	// A form without JavaScript gets a page back, with a way back.
	code, page := r.post(url.Values{"do": {"trust 203.0.113.7"}, "token": {token}}, "Accept", "text/html,*/*")
	if code != http.StatusOK || !strings.Contains(page, `id="result" class="ok"`) || !strings.Contains(page, `href="./"`) {
		t.Errorf("HTML result: %d\n%s", code, page)
	}
}

// TestPage: the page is complete without JavaScript: the figures, both
// charts as SVG, the offenders of the minute with their reasons, names
// and actions, the bans and lists; its only script is the console's own
// file, and it is never framed or cached.
func TestPage(t *testing.T) {
	r := newRig(t, token)
	bot := netip.MustParseAddr("192.0.2.9")
	// The resolver learns the bot's name as admission would.
	if _, err := r.srv.Ban(netip.MustParsePrefix("198.51.100.0/24"), time.Hour); err != nil {
		t.Fatal(err)
	}
	r.m.SessionStart(netip.MustParseAddr("192.0.2.50"), "")
	r.m.GreetPause(1)
	for range 7 {
		r.m.Refused(reason.Pregreet, bot, "")
	}
	r.m.Refused(reason.RateControl, netip.MustParseAddr("2001:db8::5"), "")
	w := httptest.NewRecorder()
	r.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/console/", nil))
	page := w.Body.String()
	for _, want := range []string{
		`<dd id="sessions">1</dd>`,
		`<dd id="greet-pause">1</dd>`,
		`<figure id="chart-accepts"`,
		`<figure id="chart-refusals"`,
		`<path d="M48.0,`,
		`pregreet <small>7</small>`, // the legend
		`<tr data-prefix="192.0.2.9/32" data-reason="pregreet"><td class="prefix">192.0.2.9</td><td class="count">7</td>`,
		`<tr data-prefix="192.0.2.0/24" data-reason="pregreet">`,
		`<tr data-prefix="2001:db8::/64" data-reason="ratecontrol">`,
		`<button name="do" value="deny 192.0.2.9/32" class="deny">deny</button>`,
		`<button name="do" value="ban 1h 192.0.2.9/32" class="ban">ban 1h</button>`,
		`<button name="do" value="trust 192.0.2.9/32" class="trust">trust</button>`,
		`<tr data-prefix="198.51.100.0/24"><td class="prefix">198.51.100.0/24</td><td class="reason">control</td><td>operator</td>`,
		`<input type="password" name="token"`,
		`<script src="static/console.js" defer></script>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if n := len(regexp.MustCompile(`<script`).FindAllString(page, -1)); n != 1 {
		t.Errorf("%d scripts, want the one file", n)
	}
	if strings.Contains(page, token) {
		t.Error("the page holds the token")
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("X-Frame-Options") != "DENY" {
		t.Errorf("headers %v", w.Header())
	}

	// A denied client shows as such, and in the deny list.
	r.post(url.Values{"do": {"deny 192.0.2.9"}, "token": {token}})
	_, page = r.get("/console/")
	if !strings.Contains(page, `<tr data-prefix="192.0.2.9/32" data-reason="pregreet" class="denied">`) ||
		!strings.Contains(page, `<li data-prefix="192.0.2.9/32">192.0.2.9</li>`) {
		t.Errorf("after deny, the page does not show it denied:\n%s", page)
	}
}

// TestHourFresh: the last hour's offenders are as fresh as the minute's
// while adding them up is cheap (they are held for ten seconds only under
// a flood from many addresses: BenchmarkPage).
func TestHourFresh(t *testing.T) {
	r := newRig(t, token)
	if _, page := r.get("/console/"); !strings.Contains(page, `<table class="offenders" id="h-ips">`) {
		t.Fatalf("no hour table:\n%s", page)
	}
	r.m.Refused(reason.Pregreet, netip.MustParseAddr("192.0.2.9"), "")
	r.later()
	_, page := r.get("/console/")
	hour := page[strings.Index(page, `id="span-h"`):]
	if !strings.Contains(hour, `<tr data-prefix="192.0.2.9/32" data-reason="pregreet">`) {
		t.Errorf("a second later, the hour's offenders lack the client:\n%s", hour)
	}
}

// TestNames: a client whose name the server has looked up (at its
// admission) is counted in its reverse-DNS suffix; the console asks no
// DNS server itself.
func TestNames(t *testing.T) {
	r := newRig(t, token)
	bot := netip.MustParseAddr("127.0.5.9")
	r.m.Refused(reason.Pregreet, bot, "")
	if _, page := r.get("/console/"); strings.Contains(page, "dyn.flood.test") {
		t.Fatal("a name before any lookup")
	}
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: bot.AsSlice()}}
	conn, err := d.Dial("tcp", r.srv.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "220") {
		t.Fatalf("greeting %q, %v", line, err) // admission, and its lookup, are done
	}
	r.later()
	_, page := r.get("/console/")
	if !strings.Contains(page, `<tr data-suffix=".dyn.flood.test" data-reason="pregreet"><td class="prefix">.dyn.flood.test</td><td class="count">1</td><td class="count">1</td>`) ||
		!strings.Contains(page, "<code>ALL: .dyn.flood.test</code>") {
		t.Errorf("the names table lacks the client's suffix:\n%s", page)
	}
}

// TestEvents: the live stream sends the page's sections as JSON, each
// the same HTML the page holds, and ends when the client goes.
func TestEvents(t *testing.T) {
	r := newRig(t, token)
	r.m.Refused(reason.NonSMTP, netip.MustParseAddr("192.0.2.9"), "")
	hs := httptest.NewServer(r.h)
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/console/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var event, data string
	for sc.Scan() && (event == "" || data == "") {
		if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			event = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			data = v
		}
	}
	if event != "update" {
		t.Fatalf("event %q", event)
	}
	var parts map[string]string
	if err := json.Unmarshal([]byte(data), &parts); err != nil {
		t.Fatal(err)
	}
	_, page := r.get("/console/")
	for _, id := range []string{"now", "charts", "offenders", "bans", "lists"} {
		if parts[id] == "" || !strings.Contains(page, `<section id="`+id+`">`+parts[id]+`</section>`) {
			t.Errorf("section %s is not the page's:\n%.300s", id, parts[id])
		}
	}
	if !strings.Contains(parts["offenders"], `data-prefix="192.0.2.9/32" data-reason="non_smtp"`) {
		t.Errorf("the stream's offenders lack the client:\n%s", parts["offenders"])
	}
}

// BenchmarkPage is what an open console costs the server: one snapshot
// (the collectors, the hour's series, the minute's summary with names,
// the server's state) rendered as the page, over a window full for the
// hour (every bucket's client and network tables full, as under a flood
// from many addresses). A live stream renders the same sections, shared by
// every open console, once a second (second); every tenth second the
// hour's offenders are added up too (with-hour).
func BenchmarkPage(b *testing.B) {
	for _, bc := range []struct {
		name string
		step time.Duration
	}{{"second", time.Second}, {"with-hour", 10 * time.Second}} {
		b.Run(bc.name, func(b *testing.B) {
			r := newRig(b, token)
			now := time.Now()
			r.m.Recent = metrics.NewRecent(func() time.Time { return now })
			reasons := []reason.Reason{reason.Pregreet, reason.RateControl, reason.UnknownUser, reason.NonSMTP, reason.DenyList}
			start := now.Add(-time.Hour)
			for i := range 200 * 360 {
				now = start.Add(time.Duration(i) * time.Hour / (200 * 360))
				r.m.Recent.Refused(reasons[i%len(reasons)], netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
			}
			now = start.Add(time.Hour)
			r.get("/console/")
			b.ReportAllocs()
			for b.Loop() {
				r.skew.Add(int64(bc.step))
				if code, _ := r.get("/console/"); code != http.StatusOK {
					b.Fatal(code)
				}
			}
		})
	}
}

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
)

// Replies of the limits, as a client sees them.
const (
	replyRate     = "421 4.3.2 Connection rate limit exceeded."
	replyConn     = "421 4.3.2 Too many open connections."
	replyTempfail = "421 4.3.0 mx.test Service temporarily unavailable"
)

// sentinelFleet starts three mxguard nodes sharing their counters in the
// primary that g's Sentinels watch, each with an admin listener; extra is
// added to [fleet].
func sentinelFleet(t *testing.T, g *redistest.Sentinels, n int, limits, extra string) []*mx {
	t.Helper()
	// The probes of shared counting (127.2.x.y) connect to one node after
	// another: unlimited open connections, so that one whose lease a node
	// has not yet released does not count.
	access := writeFile(t, t.TempDir(), "access", "ClientConn:127.2 0\n")
	conf := fmt.Sprintf(`trusted_networks = ["127.0.0.1/32"]
access_map = %q
[limits]
%s
[fleet]
sentinel = [%s]
master_name = %q
%s
[admin]
listen = "127.0.0.1:0"
`, access, limits, quoteList(g.Addrs()), g.MasterName, extra)
	var nodes []*mx
	for range n {
		nodes = append(nodes, startMXLoopback(t, conf))
	}
	return nodes
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// adminURL is the base URL of the node's admin listener (port 0 in the
// configuration: the one it logged).
func (m *mx) adminURL() string {
	m.t.Helper()
	sub := adminAddrRE.FindStringSubmatch(m.waitLogAll(10*time.Second, `msg="admin listening"`))
	if sub == nil {
		m.t.Fatalf("no address in the admin listening line; log:\n%s", m.logs())
	}
	return "http://" + sub[1]
}

var backendRE = regexp.MustCompile(`(?m)^mxguard_limiter_backend\{backend="(\w+)"\} 1$`)

// limiterBackend is what the node's /metrics says the limits are counted
// in now: local, redis or fallback.
func limiterBackend(t *testing.T, adminURL string) string {
	t.Helper()
	body := httpGet(t, adminURL+"/metrics")
	m := backendRE.FindAllStringSubmatch(body, -1)
	if len(m) != 1 {
		t.Fatalf("/metrics has %d limiter backends at 1, want one:\n%s", len(m), grepLines(body, "mxguard_limiter_backend"))
	}
	return m[0][1]
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// readyz returns the status code of the node's /readyz.
func readyz(t *testing.T, adminURL string) int {
	t.Helper()
	resp, err := http.Get(adminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// firstReply connects from src to addr and returns the first reply line;
// a greeting is ended with QUIT. It never fails the test (load goroutines
// call it): what went wrong is in the returned text.
func firstReply(src, addr string, then func(c net.Conn, br *lineReader) string) string {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := &lineReader{c: c}
	line := br.reply()
	if strings.HasPrefix(line, "220 ") && then != nil {
		if bad := then(c, br); bad != "" {
			return line + " then " + bad
		}
	}
	return line
}

// lineReader reads SMTP replies without a bufio.Reader's read-ahead, which
// is not needed for one reply at a time.
type lineReader struct {
	c   net.Conn
	buf []byte
}

func (r *lineReader) reply() string {
	for {
		i := strings.Index(string(r.buf), "\r\n")
		if i >= 0 {
			line := string(r.buf[:i])
			r.buf = r.buf[i+2:]
			if len(line) >= 4 && line[3] == '-' {
				continue
			}
			return line
		}
		var b [512]byte
		n, err := r.c.Read(b[:])
		if err != nil {
			return "EOF: " + err.Error()
		}
		r.buf = append(r.buf, b[:n]...)
	}
}

// quitSession ends a greeted session with QUIT and checks the 221.
func quitSession(c net.Conn, br *lineReader) string {
	if _, err := io.WriteString(c, "QUIT\r\n"); err != nil {
		return err.Error()
	}
	if got := br.reply(); !strings.HasPrefix(got, "221 ") {
		return "QUIT: " + got
	}
	return ""
}

// ehloQuit is a short session: EHLO, then QUIT.
func ehloQuit(c net.Conn, br *lineReader) string {
	if _, err := io.WriteString(c, "EHLO client.example\r\n"); err != nil {
		return err.Error()
	}
	if got := br.reply(); !strings.HasPrefix(got, "250 ") {
		return "EHLO: " + got
	}
	return quitSession(c, br)
}

// Lines of the limiter's changes of state.
const (
	lineDown = "limit: shared counters unreachable"
	lineUp   = "limit: shared counters reachable again"
)

// outages checks that the node wrote one line per change of its limiter's
// state: outages and recoveries alternate, the first an outage, the last
// a recovery. It returns each outage's line. An outage after the first is
// a call that ran over its 100 ms on a loaded machine: its line must say
// so (a deadline), for a refused connection would mean the node went back
// to the dead primary.
func outages(t *testing.T, name string, m *mx) []string {
	t.Helper()
	var downs []string
	want := lineDown
	for _, l := range strings.Split(m.logs(), "\n") {
		isDown, isUp := strings.Contains(l, lineDown), strings.Contains(l, lineUp)
		if !isDown && !isUp {
			continue
		}
		if !strings.Contains(l, want) {
			t.Errorf("%s: %q out of turn, want a line with %q: one line per change of state:\n%s", name, l, want, grepLines(m.logs(), "limit: "))
			return downs
		}
		if isDown {
			downs = append(downs, l)
			want = lineUp
		} else {
			want = lineDown
		}
	}
	switch {
	case len(downs) == 0:
		t.Errorf("%s: no outage logged", name)
	case want != lineDown:
		t.Errorf("%s: the last outage has no recovery logged:\n%s", name, grepLines(m.logs(), "limit: "))
	}
	for _, l := range downs[min(1, len(downs)):] {
		if !strings.Contains(l, "deadline exceeded") {
			t.Errorf("%s: a second outage, not a timeout: %s", name, l)
		}
	}
	if len(downs) > 1 {
		t.Logf("%s: %d more outages after the failover, each a call over the timeout:\n%s", name, len(downs)-1, strings.Join(downs[1:], "\n"))
	}
	return downs
}

// TestFleetSentinelFailover: three nodes count ClientRate and ClientConn
// in a Redis primary that three Sentinels watch, under a steady load of
// connections from a few clients; the primary is killed (SIGKILL). No
// connection fails meanwhile: each gets its greeting or a limit's own
// refusal, never the limiter's 421 (on_redis_error = "local": each node
// counts on its own during the failover). The nodes share their counts
// again on the promoted replica, by themselves; the test logs how long
// after the kill that was (bounded at 30 s). Each node says so in its
// log once per change (down, up) and in /metrics
// (mxguard_limiter_backend: redis, fallback, redis).
func TestFleetSentinelFailover(t *testing.T) {
	t.Parallel()
	g := redistest.StartSentinels(t, redistest.SentinelConfig{})
	nodes := sentinelFleet(t, g, 3, "client_rate = 2\nclient_conn = 1", `on_redis_error = "local"`)
	a, b, c := nodes[0], nodes[1], nodes[2]
	var admins []string
	for _, n := range nodes {
		admins = append(admins, n.adminURL())
	}
	for i := range nodes {
		if got := limiterBackend(t, admins[i]); got != "redis" {
			t.Fatalf("node %d counts in %q at start, want redis", i, got)
		}
	}

	// sharedRate tells whether the fleet counts ClientRate as one: a
	// client new to it connects to each node once, and the third
	// connection is over client_rate = 2 only if the nodes share counts.
	probes := 0
	sharedRate := func() bool {
		t.Helper()
		probes++
		src := fmt.Sprintf("127.2.%d.%d", probes/250, probes%250+1)
		for _, n := range []*mx{a, b} {
			if got := firstReply(src, n.addr, quitSession); got != "220 mx.test ESMTP mxguard" {
				t.Fatalf("probe %s on %s: %q, want the greeting", src, n.addr, got)
			}
		}
		switch got := firstReply(src, c.addr, quitSession); got {
		case replyRate:
			return true
		case "220 mx.test ESMTP mxguard":
			return false
		default:
			t.Fatalf("probe %s, third connection: %q", src, got)
			return false
		}
	}
	// sharedConn: a client holding its one allowed connection on one node
	// is refused by another. A node on a loaded machine may be counting
	// on its own for a second (a call over its timeout), so a client that
	// got through is tried again, as another client, a few times.
	conns := 0
	sharedConn := func(hold, other *mx) {
		t.Helper()
		var got string
		for range 5 {
			conns++
			src := fmt.Sprintf("127.3.0.%d", conns)
			_, line, _ := greet(t, src, hold.addr) // closed when the test ends
			expect(t, line, "220")
			if got = firstReply(src, other.addr, quitSession); got == replyConn {
				return
			}
			time.Sleep(time.Second)
		}
		t.Errorf("second open connection of a client, on another node: %q, want %q", got, replyConn)
	}
	if !sharedRate() {
		t.Fatal("ClientRate not shared by the nodes before the failover")
	}
	sharedConn(a, b)

	// The load: fresh clients with short sessions (always within their
	// limits), and a few that come back again and again (over theirs).
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		counts   = make(map[string]int)
		seq      atomic.Int64
	)
	record := func(who, got string, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		counts[got]++
		if !ok && len(failures) < 20 {
			failures = append(failures, who+": "+got)
		}
	}
	for w := range 5 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				node := nodes[i%len(nodes)]
				if w < 3 { // a fresh client each time
					k := seq.Add(1)
					src := fmt.Sprintf("127.4.%d.%d", k/250, k%250+1)
					got := firstReply(src, node.addr, ehloQuit)
					record(src, got, got == "220 mx.test ESMTP mxguard")
					continue
				}
				src := fmt.Sprintf("127.5.0.%d", w)
				got := firstReply(src, node.addr, quitSession)
				record(src, got, got == "220 mx.test ESMTP mxguard" || got == replyRate || got == replyConn)
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	time.Sleep(time.Second)

	old := g.KillPrimary()
	killed := time.Now()
	// A deny given while there is no primary holds on its node at once,
	// and reaches the others when the promoted replica answers: the node
	// sends what the fleet lacks when it resynchronises.
	if out, err := a.mxctl("deny", "127.6.0.1"); err != nil || !strings.Contains(out, "denied 127.6.0.1/32") {
		t.Fatalf("mxguard deny during the failover: %v\n%s", err, out)
	}
	refusedWithin(t, 0, "127.6.0.1", a)
	// Each node notices at its next connection and says so, once; its
	// metric says it counts on its own now.
	for i, n := range nodes {
		n.waitLogAll(10*time.Second, lineDown, "policy=local")
		if got := limiterBackend(t, admins[i]); got != "fallback" && !strings.Contains(n.logs(), lineUp) {
			t.Errorf("node %d during the failover: /metrics says %q, want fallback", i, got)
		}
	}
	var shared time.Duration
	for {
		if sharedRate() {
			shared = time.Since(killed)
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("the nodes still count apart 30s after the primary was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("primary killed: the fleet shares ClientRate again after %v (%d probes)", shared.Round(time.Millisecond), probes)
	time.Sleep(time.Second) // load on the promoted replica too
	stopLoad()

	mu.Lock()
	t.Logf("replies during the load: %v", counts)
	for _, f := range failures {
		t.Errorf("a connection failed: %s", f)
	}
	if counts["220 mx.test ESMTP mxguard"] < 50 || counts[replyRate] == 0 {
		t.Errorf("load too light to tell: %v", counts)
	}
	mu.Unlock()

	promoted := g.WaitPromoted(old, 30*time.Second)
	t.Logf("primary %s killed, replica %s promoted", old.Addr, promoted.Addr)
	sharedConn(b, c)
	refusedWithin(t, 30*time.Second, "127.6.0.1", b, c)
	t.Logf("primary killed: a deny given during the failover holds on every node %v after the kill", time.Since(killed).Round(time.Millisecond))
	// And on the promoted replica a decision reaches the fleet as before.
	if out, err := b.mxctl("deny", "127.6.0.2"); err != nil || !strings.Contains(out, "shared with the fleet") {
		t.Fatalf("mxguard deny after the failover: %v\n%s", err, out)
	}
	t.Logf("after the failover a deny reaches the other nodes in %v", refusedWithin(t, fleetReach, "127.6.0.2", a, c).Round(time.Millisecond))
	for i, n := range nodes {
		waitBackend(t, admins[i], "redis")
		outages(t, fmt.Sprintf("node %d", i), n)
		if got := n.logCount("reason=limiter"); got != 0 {
			t.Errorf("node %d refused %d connections for the limiter", i, got)
		}
	}
}

// TestFleetSentinelTempfail: with on_redis_error = "tempfail", while the
// Sentinels have no primary to name every connection gets 421 4.3.0, the
// node says so once in its log, /metrics says fallback and /readyz fails;
// once the replica is promoted the node serves again by itself, and says
// so once.
func TestFleetSentinelTempfail(t *testing.T) {
	t.Parallel()
	g := redistest.StartSentinels(t, redistest.SentinelConfig{})
	n := sentinelFleet(t, g, 1, "client_rate = 1000", `on_redis_error = "tempfail"`)[0]
	admin := n.adminURL()
	if got := limiterBackend(t, admin); got != "redis" {
		t.Fatalf("at start: %q, want redis", got)
	}
	if code := readyz(t, admin); code != http.StatusOK {
		t.Fatalf("/readyz at start: %d", code)
	}
	expect(t, firstReply("127.6.0.1", n.addr, quitSession), "220 ")

	g.KillPrimary()
	killed := time.Now()
	var refused, backAt, lastBack time.Duration
	relapses := 0     // refusals again after being served again: each must be an outage logged
	phase := "before" // then "refused", then "served"
	for i := 0; phase != "served" || time.Since(killed) < lastBack+time.Second; i++ {
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("still %s 30s after the primary was killed", phase)
		}
		got := firstReply(fmt.Sprintf("127.6.%d.%d", i/250+1, i%250+1), n.addr, quitSession)
		switch got {
		case replyTempfail:
			switch phase {
			case "before":
				phase, refused = "refused", time.Since(killed)
				if b := limiterBackend(t, admin); b != "fallback" {
					t.Errorf("while refusing: /metrics says %q, want fallback", b)
				}
				if code := readyz(t, admin); code != http.StatusServiceUnavailable {
					t.Errorf("/readyz while refusing: %d, want 503", code)
				}
			case "served":
				phase = "refused"
				relapses++
			}
		case "220 mx.test ESMTP mxguard":
			if phase == "refused" {
				phase, lastBack = "served", time.Since(killed)
				if backAt == 0 {
					backAt = lastBack
				}
			}
		default:
			t.Fatalf("connection %d, %s: %q", i, phase, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("primary killed: 421 from %v, served again from %v", refused.Round(time.Millisecond), backAt.Round(time.Millisecond))
	waitBackend(t, admin, "redis")
	if code := readyz(t, admin); code != http.StatusOK {
		t.Errorf("/readyz after the failover: %d", code)
	}
	if downs := outages(t, "the node", n); len(downs) < 1+relapses || len(downs) > 0 && !strings.Contains(downs[0], "policy=tempfail") {
		t.Errorf("%d outages logged, for %d seen (the first with policy=tempfail):\n%s", len(downs), 1+relapses, strings.Join(downs, "\n"))
	}
	if got := n.logCount("reason=limiter"); got == 0 {
		t.Error("no refusal logged with reason=limiter")
	}
}

// waitBackend waits (10 s at most) until the node's /metrics says the
// limits are counted in want: right after a failover, a node on a loaded
// machine may still be in an outage of a call that ran over its timeout.
func waitBackend(t *testing.T, adminURL, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := limiterBackend(t, adminURL)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s/metrics says the limits are counted in %q, want %q", adminURL, got, want)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

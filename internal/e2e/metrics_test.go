package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMetricsEndpoints: the admin listener serves /healthz, /readyz and
// /metrics, whose counters follow what the server did.
func TestMetricsEndpoints(t *testing.T) {
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m := startMX(t, fmt.Sprintf("trusted_networks = []\n[limits]\nclient_rate = 1\n[admin]\nlisten = %q\n", admin))
	for _, p := range []struct{ path, want string }{{"/healthz", "ok"}, {"/readyz", "ok listening"}} {
		if got := httpGet(t, "http://"+admin+p.path); !strings.HasPrefix(got, p.want) {
			t.Errorf("%s = %q", p.path, got)
		}
	}
	c := rawClient(t, "127.0.0.51", m.addr)
	expect(t, c.reply(), "220")
	c.cmd("QUIT")
	c = rawClient(t, "127.0.0.51", m.addr)
	expect(t, c.reply(), "421 4.3.2")
	body := httpGet(t, "http://"+admin+"/metrics")
	for _, want := range []string{
		`mxguard_refusals_total{reason="ratecontrol",stage="connect"} 1`,
		`mxguard_refusals_total{reason="pregreet",stage="greet"} 0`,
		`mxguard_connections_accepted_total 2`,
		`mxguard_limiter_backend{backend="local"} 1`,
		"mxguard_command_duration_seconds_bucket{cmd=\"QUIT\",code=\"221\"",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "127.0.0.51") {
		t.Error("/metrics names a client: a label from outside the vocabulary")
	}
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestPrometheusScrape: Debian's Prometheus server scrapes mxguard's
// admin listener while a small flood is refused and a few messages are
// delivered; its query API then shows the refusals by reason and the
// deliveries, as many as the test made.
func TestPrometheusScrape(t *testing.T) {
	prom := need(t, "prometheus", "prometheus")
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m := startMX(t, fmt.Sprintf("trusted_networks = []\n[limits]\nclient_rate = 2\n[admin]\nlisten = %q\n", admin))

	dir := t.TempDir()
	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(conf, []byte(fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mxguard\n    static_configs:\n      - targets: [%q]\n", admin)), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prom, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	var promLog strings.Builder
	cmd.Stdout, cmd.Stderr = &promLog, &promLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", promLog.String())
		}
	})

	// The flood: 6 clients, 5 connections each; client_rate 2 refuses 3 of
	// each. And 4 messages from a client that stays within its rate.
	const clients, each, allowed = 6, 5, 2
	for i := range clients {
		src := fmt.Sprintf("127.0.1.%d", i+1)
		for j := range each {
			c := rawClient(t, src, m.addr)
			got := c.reply()
			switch {
			case j < allowed && strings.HasPrefix(got, "220"):
				c.cmd("QUIT")
			case j >= allowed && strings.HasPrefix(got, "421 4.3.2"):
			default:
				t.Fatalf("%s connection %d: %q", src, j+1, got)
			}
			c.c.Close()
		}
	}
	const messages = 4
	for i := range messages {
		if err := sendGo(t, fmt.Sprintf("127.0.2.%d", i+1), m.addr, "a@example.org", []string{"metrics@localhost"}, "Subject: m\r\n\r\nhi\r\n"); err != nil {
			t.Fatal(err)
		}
	}

	wantRefused := clients * (each - allowed)
	for q, want := range map[string]int{
		`mxguard_refusals_total{reason="ratecontrol"}`:                      wantRefused,
		`mxguard_deliveries_total{transport="maildir",outcome="delivered"}`: messages,
		`mxguard_messages_accepted_total`:                                   messages,
		`sum(mxguard_refusals_total{stage="connect"})`:                      wantRefused,
	} {
		promWait(t, promAddr, q, want)
	}
}

// promWait polls Prometheus's query API (30 s at most) until q's value is
// want: the scrape that sees the last event may be a second away.
func promWait(t *testing.T, promAddr, q string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := "no answer"
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err == nil {
			var r struct {
				Status string
				Data   struct {
					Result []struct {
						Value [2]any
					}
				}
			}
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Status == "success" && len(r.Data.Result) == 1 {
				s, _ := r.Data.Result[0].Value[1].(string)
				last = s
				if n, err := strconv.ParseFloat(s, 64); err == nil && int(n) == want {
					return
				}
			}
		} else {
			last = err.Error()
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("Prometheus: %s = %s after 30s, want %d", q, last, want)
}

// TestStatus: `mxguard status` shows the sessions now, the refusals of
// the last minute by reason, and the clients and networks that drew them.
func TestStatus(t *testing.T) {
	m := startMX(t, "trusted_networks = []\n[limits]\nclient_rate = 1\n")
	for i, src := range []string{"127.0.5.1", "127.0.5.1", "127.0.5.1", "127.0.5.1", "127.0.5.2", "127.0.5.2"} {
		c := rawClient(t, src, m.addr)
		got := c.reply()
		if first := i == 0 || i == 4; first != strings.HasPrefix(got, "220") {
			t.Fatalf("%s: %q", src, got)
		}
		c.c.Close()
	}
	idle := rawClient(t, "127.0.6.1", m.addr)
	expect(t, idle.reply(), "220")
	out, err := m.mxctl("status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"1 sessions now",
		"limits counted: local",
		"last minute: 3 sessions admitted, 0 messages accepted, 4 refused",
		"  ratecontrol            4",
		"top refused clients (last minute):\n  127.0.5.1                   3  ratecontrol\n  127.0.5.2                   1  ratecontrol\n",
		"top refused networks (last minute):\n  127.0.5.0/24                4  ratecontrol",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	js, err := m.mxctl("status", "--json")
	if err != nil || !strings.Contains(js, `"refused":{"ratecontrol":4}`) {
		t.Errorf("status --json: %v\n%s", err, js)
	}
}

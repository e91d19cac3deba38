package suggest

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/server"
	"github.com/mxguard/mxguard/internal/stats"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// needPatch is GNU patch, which applies the diffs here as an operator
// would: a test that skipped without it would test nothing.
func needPatch(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("patch")
	if err != nil {
		t.Fatalf("patch is not installed: install the Debian package patch (./test.sh does): %v", err)
	}
	return p
}

// trafficDays is a day of traffic with a p95 of 20 sessions open, clients
// that delivered mail, and a dial-up pool refused 500 times.
func trafficDays() []stats.Day {
	d := day("2026-03-25", 20, 45)
	d.ClientRate.AddN(3, 100)
	d.ClientConn.AddN(2, 100)
	d.Suffixes = []stats.Source{{Key: "dsl.example", Refused: map[reason.Reason]int64{reason.Pregreet: 500}}}
	d.Networks = []stats.Source{
		{Key: "203.0.113.0/24", Refused: map[reason.Reason]int64{reason.Pregreet: 500}},
		{Key: "2001:db8:5:6::/64", Refused: map[reason.Reason]int64{reason.NonSMTP: 200}},
	}
	return []stats.Day{d}
}

// TestRenderApplies writes configurations of every shape, runs the
// suggestion on them, applies its diff with patch(1), and checks the
// result as `mxguard check` does, with the proposed values in force.
func TestRenderApplies(t *testing.T) {
	patch := needPatch(t)
	seedAccess := "ClientRate:127.0.0.1                    0\nClientRate:                             5\nClientConn:127.0.0.1                    0\nClientConn:                             3\n"
	for _, c := range []struct {
		name   string
		config string // with DIR for the test's directory
		files  map[string]string
		// access: ClientRate: and ClientConn: come from the access map
		access bool
	}{
		{name: "keys set", config: "data_dir = \"DIR/data\"\nhosts_deny = \"DIR/hosts.deny\"\n\n[limits]\nmax_daemon_children = 0 # none yet\nclient_rate = 1\nclient_conn = 1\nconnection_rate_throttle = 5\n\n[timeouts]\ncommand = \"30s\"\n",
			files: map[string]string{"hosts.deny": "sendmail: .adsl.alicedsl.de\nsendmail: .tukw.qwest.net\n"}},
		{name: "no limits, no hosts.deny", config: "data_dir = \"DIR/data\"\nlocal_domains = [\n  \"example.org\",\n]\n\n[timeouts]\ncommand = \"30s\"\n"},
		{name: "seed's access map", config: "data_dir = \"DIR/data\"\naccess_map = \"DIR/access\"\nhosts_deny = \"DIR/hosts.deny\"\n[limits]\ngreet_pause = \"2s\"",
			files: map[string]string{"access": seedAccess, "hosts.deny": "sendmail: .adsl.alicedsl.de"}, access: true},
		{name: "dotted keys, no newline at the end", config: "data_dir = \"DIR/data\"\nlimits.max_daemon_children = 10\nlimits.client_rate = 2"},
		{name: "indented, tables only", config: "[limits]\n  client_conn = 1\n[admin]\n  listen = \"\"\n"},
		{name: "empty", config: ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, content string) string {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "DIR", dir)), 0o644); err != nil {
					t.Fatal(err)
				}
				return p
			}
			for name, content := range c.files {
				write(name, content)
			}
			cfgPath := write("mxguard.toml", c.config)
			statsPath := filepath.Join(dir, "stats.json")
			if err := stats.Save(statsPath, trafficDays()); err != nil {
				t.Fatal(err)
			}
			var diff bytes.Buffer
			if err := Run(&diff, Input{ConfigPath: cfgPath, StatsPath: statsPath, Options: Defaults()}); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(patch, "-d", "/", "-p1", "--batch", "--forward")
			cmd.Stdin = bytes.NewReader(diff.Bytes())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("patch: %v\n%s\nthe diff:\n%s", err, out, diff.String())
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				t.Fatalf("the patched configuration does not load: %v\n%s", err, diff.String())
			}
			if _, err := server.Check(cfg); err != nil {
				t.Fatalf("mxguard check fails on the patched files: %v\n%s", err, diff.String())
			}
			if l := cfg.Limits; l.MaxDaemonChildren != 60 || l.ConnectionRateThrottle != 10 {
				t.Errorf("max_daemon_children %d, connection_rate_throttle %d; want 60, 10\n%s", l.MaxDaemonChildren, l.ConnectionRateThrottle, diff.String())
			}
			rate, conn := int64(cfg.Limits.ClientRate), int64(cfg.Limits.ClientConn)
			if c.access {
				m, err := accessmap.Load(cfg.AccessMap)
				if err != nil {
					t.Fatal(err)
				}
				for e := range m.All() {
					if e.Key == "" && e.Tag == accessmap.TagClientRate {
						rate = atoi(e.Value)
					}
					if e.Key == "" && e.Tag == accessmap.TagClientConn {
						conn = atoi(e.Value)
					}
				}
			}
			if rate != 6 || conn != 4 {
				t.Errorf("client_rate %d, client_conn %d; want 6, 4\n%s", rate, conn, diff.String())
			}
			if cfg.HostsDeny == "" {
				t.Fatalf("no hosts_deny after the patch\n%s", diff.String())
			}
			tw, err := tcpwrap.Load(cfg.HostsAllow, cfg.HostsDeny)
			if err != nil {
				t.Fatal(err)
			}
			for _, client := range []tcpwrap.Client{
				{Addr: netip.MustParseAddr("198.51.100.1"), Name: "host-1.dsl.example"},
				{Addr: netip.MustParseAddr("203.0.113.77")},
				{Addr: netip.MustParseAddr("2001:db8:5:6::99")},
			} {
				if v := tw.Check(tcpwrap.Daemon, client); v.Allowed {
					t.Errorf("%+v allowed by the patched hosts.deny", client)
				}
			}
			if v := tw.Check(tcpwrap.Daemon, tcpwrap.Client{Addr: netip.MustParseAddr("198.51.100.1"), Name: "mail.example.org"}); !v.Allowed {
				t.Errorf("a sender refused by %s:%d", v.File, v.Line)
			}
			// Every proposed line has the figures above it.
			prev := ""
			for _, l := range strings.Split(diff.String(), "\n") {
				body, added := strings.CutPrefix(l, "+")
				body = strings.TrimSpace(body)
				if added && !strings.HasPrefix(l, "+++") && body != "" && !strings.HasPrefix(body, "#") && body != "[limits]" &&
					!strings.HasPrefix(prev, `\ No newline`) &&
					!strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(prev, "+")), commentPrefix) {
					t.Errorf("a proposed line without its figures above it: %q after %q", l, prev)
				}
				prev = l
			}
			// Applied, the same traffic proposes nothing more.
			var again bytes.Buffer
			if err := Run(&again, Input{ConfigPath: cfgPath, StatsPath: statsPath, Options: Defaults()}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(again.String(), "# nothing to change") || strings.Contains(again.String(), "\n--- ") {
				t.Errorf("a second run proposes more:\n%s", again.String())
			}
		})
	}
}

func atoi(s string) int64 {
	var n int64
	for _, c := range strings.TrimSpace(s) {
		n = n*10 + int64(c-'0')
	}
	return n
}

// TestRenderRefuses: a key that shares its line with others is not
// edited by line: the operator is told where to set it.
func TestRenderRefuses(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mxguard.toml")
	os.WriteFile(cfgPath, []byte("data_dir = \""+dir+"\"\nlimits = { max_daemon_children = 5, client_rate = 2 }\n"), 0o644)
	statsPath := filepath.Join(dir, "stats.json")
	stats.Save(statsPath, trafficDays())
	err := Run(&bytes.Buffer{}, Input{ConfigPath: cfgPath, StatsPath: statsPath, Options: Defaults()})
	if err == nil || !strings.Contains(err.Error(), cfgPath+":2: limits.max_daemon_children is not on a line of its own; set it to 60 by hand") {
		t.Errorf("error %v", err)
	}
	// No statistics: said so, with where they come from.
	os.Remove(statsPath)
	err = Run(&bytes.Buffer{}, Input{ConfigPath: cfgPath, StatsPath: statsPath, Options: Defaults()})
	if err == nil || !strings.Contains(err.Error(), "no traffic statistics at "+statsPath) {
		t.Errorf("error %v", err)
	}
}

package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/admin"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/reason"
)

// loadConfig writes toml to dir/mxguard.toml, loads it and makes its data
// directory, as serve does.
func loadConfig(t *testing.T, dir, toml string) *config.Config {
	t.Helper()
	cfgFile := filepath.Join(dir, "mxguard.toml")
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
	return cfg
}

// newTestServer builds (without running) a server from toml, with its
// data in a directory of the test's own.
func newTestServer(t *testing.T, toml string) *Server {
	t.Helper()
	cfg := loadConfig(t, t.TempDir(), "hostname = \"mx.test\"\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"data\"\ntrusted_networks = [\"127.0.0.1/32\"]\n"+toml)
	srv, err := New(cfg, slog.New(slog.NewTextHandler(testLog{t}, nil)), WithVerifier(noDNS{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.close)
	return srv
}

// TestBan: an operator's ban refuses the network's clients at admission
// for its time, is listed with who set it, and is lifted by unban; it
// needs the score book.
func TestBan(t *testing.T) {
	s := newTestServer(t, "")
	in, out := netip.MustParseAddr("192.0.2.77"), netip.MustParseAddr("192.0.3.1")
	msg, err := s.Ban(netip.MustParsePrefix("192.0.2.5/24"), 2*time.Hour)
	if err != nil || !strings.Contains(msg, "banned 192.0.2.0/24 for 2h") {
		t.Fatalf("Ban = %q, %v", msg, err)
	}
	if d := s.admit.Admit(context.Background(), in); d.Reason != reason.Banned || d.Reject == nil || d.Reject.Code != 554 {
		t.Errorf("a client of the banned network: reason %q, reply %v", d.Reason, d.Reject)
	} else {
		d.Release()
	}
	if d := s.admit.Admit(context.Background(), out); d.Reject != nil {
		t.Errorf("a client outside it is refused: %v", d.Reject)
	} else {
		d.Release()
	}
	bans := s.ConsoleState().Bans
	if len(bans) != 1 || bans[0].By != BanBy || bans[0].Reason != reason.Control || bans[0].Hits != 1 ||
		time.Until(bans[0].Expires) < time.Hour || time.Until(bans[0].Expires) > 2*time.Hour {
		t.Errorf("bans: %+v", bans)
	}
	if _, err := s.Ban(netip.MustParsePrefix("192.0.2.0/24"), 0); err == nil {
		t.Error("a ban of no time was taken")
	}
	if _, err := s.Unban(netip.MustParsePrefix("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	if d := s.admit.Admit(context.Background(), in); d.Reject != nil {
		t.Errorf("refused after unban: %v", d.Reject)
	} else {
		d.Release()
	}

	off := newTestServer(t, "[reputation]\ntarpit_below = 0\nban_below = 0\n")
	if _, err := off.Ban(netip.MustParsePrefix("192.0.2.0/24"), time.Hour); err == nil || !strings.Contains(err.Error(), "no bans") {
		t.Errorf("Ban without a score book: %v", err)
	}
}

// TestConsoleMounted: the console is on the admin listener's handler only
// when configured, beside /metrics, and its actions reach the server:
// deny through the console puts the client in the running deny list.
func TestConsoleMounted(t *testing.T) {
	s := newTestServer(t, "[admin]\nlisten = \"127.0.0.1:0\"\n")
	h := admin.Handler(s.metrics.Gatherer(), s, s.consoleHandler())
	if code, _ := get(t, h, "/console/"); code != http.StatusNotFound {
		t.Errorf("console off: /console/ answers %d", code)
	}

	const token = "0123456789abcdef0123"
	s = newTestServer(t, "[admin]\nlisten = \"127.0.0.1:0\"\nconsole = true\nconsole_token = \""+token+"\"\n")
	h = admin.Handler(s.metrics.Gatherer(), s, s.consoleHandler())
	if code, body := get(t, h, "/console/"); code != http.StatusOK || !strings.Contains(body, "mx.test") {
		t.Errorf("/console/: %d %.200s", code, body)
	}
	if code, _ := get(t, h, "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics beside the console: %d", code)
	}
	form := url.Values{"token": {token}, "do": {"deny 192.0.2.9"}}
	r := httptest.NewRequest(http.MethodPost, "/console/act", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("deny: %d %s", w.Code, w.Body)
	}
	if d := s.admit.Admit(context.Background(), netip.MustParseAddr("192.0.2.9")); d.Reason != reason.DenyList {
		t.Errorf("after deny from the console: reason %q", d.Reason)
	} else {
		d.Release()
	}
}

// TestConsoleTokenFile: the token file is checked when the configuration
// is loaded (start, check, reload), and read again at each state change,
// so that a new token applies without a restart.
func TestConsoleTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	os.WriteFile(file, []byte("short\n"), 0o600)
	cfg, err := config.Parse([]byte("[admin]\nlisten = \"127.0.0.1:0\"\nconsole = true\nconsole_token_file = \""+file+"\"\n"), filepath.Join(dir, "x.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(cfg); err == nil || !strings.Contains(err.Error(), "admin.console_token_file") || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a short token file: %v", err)
	}
	os.WriteFile(file, []byte("first-token-0123456789\n"), 0o600)
	if tok, err := consoleToken(cfg); err != nil || tok != "first-token-0123456789" {
		t.Errorf("token = %q, %v", tok, err)
	}
	os.WriteFile(file, []byte("second-token-0123456789"), 0o600)
	if tok, _ := consoleToken(cfg); tok != "second-token-0123456789" {
		t.Errorf("after the file changed: %q", tok)
	}
	os.Remove(file)
	if _, err := consoleToken(cfg); err == nil || !strings.Contains(err.Error(), "admin.console_token_file") {
		t.Errorf("no file: %v", err)
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(w.Body)
	return w.Code, string(b)
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigErrorsBeforeStart: what passes `check` starts, and what would
// lock every client out or damage a configured path fails both `check` and
// `serve` with the config line, before anything is made or removed.
func TestConfigErrorsBeforeStart(t *testing.T) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	if err := os.Mkdir(ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	dataFile := filepath.Join(dir, "data-file")
	os.WriteFile(dataFile, []byte("not a directory"), 0o644)
	access := filepath.Join(dir, "access")
	os.WriteFile(access, []byte("ClientRate:127.0.0.9 1000000\n"), 0o644)

	for _, tt := range []struct {
		name, toml string
		want       []string
	}{
		{"rate beyond the limiter", "listen = [\"127.0.0.1:0\"]\ndata_dir = \"d\"\n[limits]\nclient_rate = 100000\n",
			[]string{"cfg.toml:4: limits.client_rate: 100000 is more than the largest supported value, 65536"}},
		{"access rate beyond the limiter", "listen = [\"127.0.0.1:0\"]\ndata_dir = \"d\"\naccess_map = \"" + access + "\"\n",
			[]string{access + ":1: ClientRate:127.0.0.9: 1000000 is more than the largest supported rate"}},
		{"directory at the control path", "listen = [\"127.0.0.1:0\"]\ndata_dir = \"d\"\ncontrol = \"" + ctl + "\"\n",
			[]string{"cfg.toml:3: control: " + ctl + " exists and is not a socket (a directory)"}},
		{"two Redis setups", "listen = [\"127.0.0.1:0\"]\ndata_dir = \"d\"\n[fleet]\nredis = \"127.0.0.1:6379\"\nsentinel = [\"127.0.0.1:26379\"]\n",
			[]string{"cfg.toml:5: fleet.sentinel: fleet.redis is set too: set only one of fleet.redis, fleet.sentinel and fleet.cluster",
				"cfg.toml:5: fleet.sentinel: needs fleet.master_name"}},
		{"file as data_dir", "listen = [\"127.0.0.1:0\"]\ndata_dir = \"" + dataFile + "\"\n",
			[]string{"cfg.toml:2: data_dir: " + dataFile + " is not a directory (a regular file)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, "cfg.toml")
			if err := os.WriteFile(cfg, []byte(tt.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, verb := range []string{"check", "serve"} {
				cmd := exec.Command(binary, verb, "--config", cfg)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
					t.Fatalf("%s: %v, want exit status 1\n%s", verb, err, out)
				}
				for _, w := range tt.want {
					if !strings.Contains(string(out), w) {
						t.Errorf("%s output lacks %q:\n%s", verb, w, out)
					}
				}
			}
			// Nothing at a configured path was removed or replaced.
			if fi, err := os.Stat(ctl); err != nil || !fi.IsDir() {
				t.Errorf("the directory at the control path is gone: %v", err)
			}
			if b, err := os.ReadFile(dataFile); err != nil || string(b) != "not a directory" {
				t.Errorf("the file given as data_dir changed: %q %v", b, err)
			}
		})
	}
}

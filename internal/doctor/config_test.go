package doctor

import (
	"os"
	"path/filepath"
	"testing"
)

func writeConfig(t *testing.T, toml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mxguard.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestConfig: the config check is `mxguard check`: a file that does not
// parse fails with its line, a file it names that is missing fails with the
// key's line (server.Check, not config.Load, finds that), and warnings are
// warnings.
func TestConfig(t *testing.T) {
	t.Run("good", func(t *testing.T) {
		path := writeConfig(t, "hostname = \"mx.test\"\n")
		cfg, fs := Config(path)
		if cfg == nil || cfg.Hostname != "mx.test" {
			t.Fatalf("config %+v", cfg)
		}
		want(t, fs, CheckConfig, OK, path, "loads")
	})
	t.Run("does not parse", func(t *testing.T) {
		path := writeConfig(t, "hostname = \"mx.test\"\nlisten_on = [\"x\"]\n")
		cfg, fs := Config(path)
		if cfg != nil {
			t.Errorf("a configuration from a file that does not parse: %+v", cfg)
		}
		want(t, fs, CheckConfig, Fail, path+":2", "listen_on")
	})
	t.Run("a file it names is missing", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "access")
		path := writeConfig(t, "hostname = \"mx.test\"\naccess_map = \""+missing+"\"\n")
		cfg, fs := Config(path)
		if cfg == nil {
			t.Fatal("no configuration: the file itself parses, and the other checks need it")
		}
		want(t, fs, CheckConfig, Fail, path+":2", "access_map", missing+" does not exist")
	})
	t.Run("warnings", func(t *testing.T) {
		path := writeConfig(t, "hostname = \"mx.test\"\n[timeouts]\nauth = \"1m\"\n")
		_, fs := Config(path)
		if len(fs) != 2 || fs[0].Level != Warn || fs[1].Level != OK {
			t.Fatalf("findings %q, want a warning and the ok", fs)
		}
		want(t, fs[:1], CheckConfig, Warn, path+":3", "timeouts.auth", "no effect")
	})
}

package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The systemd unit shipped in contrib/, and the path of mxguard in it.
const (
	systemdUnit    = "contrib/systemd/mxguard.service"
	unitBinaryPath = "/usr/local/bin/mxguard"
)

// systemdAnalyze runs systemd-analyze with args and returns its combined
// output and error.
func systemdAnalyze(t *testing.T, path string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// TestSystemdUnit: contrib/systemd/mxguard.service passes systemd-analyze
// verify without a word, with ExecStart pointing at the built mxguard (verify
// checks that the program exists); its sandbox scores at most 2.0 on
// systemd-analyze security, "OK"; and the configuration its comments give
// passes `mxguard check` and puts data_dir and the control socket in the
// directories the unit makes writable.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze := need(t, "systemd-analyze", "systemd")
	dir := t.TempDir()

	// systemd-analyze verify loads units as systemd would, without systemd
	// running as PID 1; if it cannot load even the simplest unit, this
	// container cannot run it at all.
	probe := writeFile(t, dir, "mxguard-probe.service", "[Service]\nType=simple\nExecStart="+binary+" version\n")
	if out, err := systemdAnalyze(t, analyze, "verify", probe); err != nil || out != "" {
		t.Skipf("systemd-analyze cannot verify even a minimal unit here, so it cannot check %s: %v\n%s", systemdUnit, err, out)
	}

	unit := readFile(t, filepath.Join(repoRoot(t), systemdUnit))
	if !strings.Contains(unit, "ExecStart="+unitBinaryPath+" serve ") {
		t.Fatalf("%s: no ExecStart=%s serve ...", systemdUnit, unitBinaryPath)
	}
	// The copy runs the built binary; it keeps the unit's name, which
	// verify takes from the file name.
	copyDir := filepath.Join(dir, "unit")
	if err := os.Mkdir(copyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyPath := writeFile(t, copyDir, "mxguard.service", strings.ReplaceAll(unit, unitBinaryPath, binary))
	if out, err := systemdAnalyze(t, analyze, "verify", copyPath); err != nil || out != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", systemdUnit, err, out)
	}
	// systemd-analyze security scores exposure from 0 to 10 and takes the
	// threshold in tenths.
	if out, err := systemdAnalyze(t, analyze, "security", "--offline=yes", "--threshold=20", copyPath); err != nil {
		t.Errorf("systemd-analyze security %s: exposure above 2.0 (or it failed): %v\n%s", systemdUnit, err, out)
	}

	// The configuration in the unit's comments: the indented lines after
	// "with, in /etc/mxguard/mxguard.toml:".
	_, after, ok := strings.Cut(unit, "with, in /etc/mxguard/mxguard.toml:\n#\n")
	if !ok {
		t.Fatalf("%s: no configuration example in its comments", systemdUnit)
	}
	var conf strings.Builder
	for _, l := range strings.Split(after, "\n") {
		l, ok := strings.CutPrefix(l, "#   ")
		if !ok {
			break
		}
		conf.WriteString(l + "\n")
	}
	confPath := writeFile(t, dir, "mxguard.toml", conf.String())
	if out, err := exec.Command(binary, "check", "--config", confPath).CombinedOutput(); err != nil {
		t.Errorf("mxguard check on the configuration of %s's comments: %v\n%s\n%s", systemdUnit, err, out, conf.String())
	}
	directive := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `=(.*)$`).FindStringSubmatch(unit)
		if m == nil {
			t.Fatalf("%s: no %s=", systemdUnit, name)
		}
		return m[1]
	}
	setting := func(key string) string {
		m := regexp.MustCompile(`(?m)^` + key + ` *= *"([^"]*)"`).FindStringSubmatch(conf.String())
		if m == nil {
			t.Fatalf("%s: the configuration in its comments sets no %s", systemdUnit, key)
		}
		return m[1]
	}
	if got, want := setting("data_dir"), "/var/lib/"+directive("StateDirectory"); got != want {
		t.Errorf("%s: data_dir = %q, but StateDirectory= makes %s", systemdUnit, got, want)
	}
	if got, want := filepath.Dir(setting("control")), "/run/"+directive("RuntimeDirectory"); got != want {
		t.Errorf("%s: control socket in %s, but RuntimeDirectory= makes %s", systemdUnit, got, want)
	}
}

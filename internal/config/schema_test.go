package config

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the key tables of docs/SPEC.md from the schema")

// TestSchemaDefaults: every default and relay default is a value its own
// key accepts (Default panics otherwise), and the resolved timeouts leave no
// wait unset on either side.
func TestSchemaDefaults(t *testing.T) {
	c := Default()
	for _, k := range Keys() {
		if k.Default == nil && k.Computed == "" {
			t.Errorf("%s has neither a default nor a description of its computed default", k.Name)
		}
		if k.Doc == "" {
			t.Errorf("%s has no doc line", k.Name)
		}
	}
	srv := c.Timeouts.ServerSide()
	for name, d := range map[string]time.Duration{
		"helo": srv.Helo, "mail": srv.Mail, "rcpt": srv.Rcpt, "datainit": srv.DataInit,
		"datablock": srv.DataBlock, "datafinal": srv.DataFinal, "rset": srv.Rset, "quit": srv.Quit,
		"misc": srv.Misc, "starttls": srv.StartTLS, "command": srv.Command,
	} {
		if d <= 0 {
			t.Errorf("server side %s = %v", name, d)
		}
	}
	if srv.Helo != 5*time.Minute || srv.DataBlock != 3*time.Minute || srv.DataFinal != 10*time.Minute {
		t.Errorf("server side = %+v", srv)
	}
	rel := c.Timeouts.RelaySide()
	want := Timeouts{
		Command: 5 * time.Minute, Connect: 30 * time.Second, Initial: 5 * time.Minute,
		Helo: 5 * time.Minute, LHLO: 5 * time.Minute, StartTLS: time.Minute, Mail: 5 * time.Minute,
		Rcpt: 5 * time.Minute, DataInit: 2 * time.Minute, DataBlock: 3 * time.Minute,
		DataFinal: 10 * time.Minute, Quit: time.Minute, Control: 30 * time.Second,
	}
	if rel != want {
		t.Errorf("relay side =\n%+v\nwant\n%+v", rel, want)
	}
	// A value set in the file wins over the relay default; a server phase
	// set to 0 follows command.
	c = parse(t, "[timeouts]\ncommand = \"30s\"\nrcpt = \"7s\"\n")
	if got := c.Timeouts.RelaySide().Rcpt; got != 7*time.Second {
		t.Errorf("relay rcpt = %v", got)
	}
	if got := c.Timeouts.ServerSide().Mail; got != 30*time.Second {
		t.Errorf("server mail = %v", got)
	}
}

// TestUnusedKeysWarn: the sendmail timeouts that mxguard reads but does not
// apply say so, with their line.
func TestUnusedKeysWarn(t *testing.T) {
	c := parse(t, "[timeouts]\n\nauth = \"30s\"\niconnect = \"1m\"\ncommand = \"1m\"\n")
	got := strings.Join(c.Warnings, "\n")
	for _, want := range []string{"test.toml:3: timeouts.auth: accepted for sendmail compatibility, but has no effect: mxguard offers no SMTP AUTH",
		"test.toml:4: timeouts.iconnect: accepted for sendmail compatibility"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	if len(c.Warnings) != 2 {
		t.Errorf("warnings = %q, want two", c.Warnings)
	}
}

// TestFullExampleDocumentsEveryKey holds testdata/full.toml, the annotated
// reference, to the schema: it sets every key, nothing else, and the
// comment above each key states the schema's default (and says so when the
// key has no effect).
func TestFullExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(data, "full.toml"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	at := keyLines(data)
	for _, k := range Keys() {
		n := at[k.Name]
		if n == 0 {
			t.Errorf("testdata/full.toml does not show %s", k.Name)
			continue
		}
		block := docBlock(lines, n-1)
		if want := "Default: " + k.DefaultText(); !strings.Contains(block, want) {
			t.Errorf("full.toml:%d: the comment above %s lacks %q:\n%s", n, k.Name, want, block)
		}
		if k.Unused != "" && !strings.Contains(block, "no effect") {
			t.Errorf("full.toml:%d: the comment above %s does not say it has no effect", n, k.Name)
		}
	}
}

// docBlock returns the comment lines above line i (0-based), skipping the
// keys of a group that shares one comment, up to a blank line.
func docBlock(lines []string, i int) string {
	var b []string
	for j := i - 1; j >= 0; j-- {
		l := strings.TrimSpace(lines[j])
		switch {
		case l == "" || strings.HasPrefix(l, "["):
			j = -1
		case strings.HasPrefix(l, "#"):
			b = append([]string{l}, b...)
		}
	}
	return strings.Join(b, "\n")
}

// TestSpecKeyTables holds the key tables of docs/SPEC.md to the schema.
// They are generated: after changing a key, run
//
//	go test ./internal/config -run TestSpecKeyTables -update
func TestSpecKeyTables(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "SPEC.md")
	spec, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- config keys: begin -->\n", "<!-- config keys: end -->\n"
	i, j := bytes.Index(spec, []byte(begin)), bytes.Index(spec, []byte(end))
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q and %q", path, begin, end)
	}
	want := []byte(begin + SpecTables() + end)
	got := spec[i : j+len(end)]
	if bytes.Equal(got, want) {
		return
	}
	if *update {
		out := append(append(append([]byte(nil), spec[:i]...), want...), spec[j+len(end):]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the key tables of %s are out of date with the schema; run\n\tgo test ./internal/config -run TestSpecKeyTables -update", path)
}

// TestNoFile: without a configuration file the newcomer's server takes
// mail for any local part of localhost and says so; any file, even an
// empty one, takes only known recipients.
func TestNoFile(t *testing.T) {
	c := NoFile()
	if !c.Recipients.CatchAll || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "every local part of localhost") {
		t.Errorf("NoFile: catch_all %v, warnings %q", c.Recipients.CatchAll, c.Warnings)
	}
	if parse(t, "").Recipients.CatchAll || Default().Recipients.CatchAll {
		t.Error("an empty file or Default() accepts every local part")
	}
}

// TestAdminListenWarning: an admin listener the network can reach is
// warned about, with its line.
func TestAdminListenWarning(t *testing.T) {
	for doc, warn := range map[string]bool{
		"[admin]\nlisten = \"127.0.0.1:8025\"\n": false,
		"[admin]\nlisten = \"[::1]:8025\"\n":     false,
		"[admin]\nlisten = \"192.0.2.1:8025\"\n": true,
		"[admin]\nlisten = \":8025\"\n":          true,
	} {
		c := parse(t, doc)
		if got := len(c.Warnings) == 1 && strings.Contains(c.Warnings[0], "test.toml:2: admin.listen:"); got != warn {
			t.Errorf("%q: warnings %q", doc, c.Warnings)
		}
	}
}

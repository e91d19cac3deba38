package reason

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/SPEC.md's table of reasons")

var snake = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestNames: every reason is lower-case snake_case and listed once.
func TestNames(t *testing.T) {
	seen := map[Reason]bool{}
	for _, i := range All() {
		if !snake.MatchString(string(i.Reason)) {
			t.Errorf("%q is not lower-case snake_case", i.Reason)
		}
		if seen[i.Reason] {
			t.Errorf("%q listed twice", i.Reason)
		}
		seen[i.Reason] = true
		if i.Doc == "" || i.Stage == "" {
			t.Errorf("%q lacks its stage or doc", i.Reason)
		}
	}
	for _, p := range []string{"helo", "mail", "rcpt", "datainit", "datablock", "datafinal", "rset", "quit", "misc", "starttls"} {
		if r, ok := ByPhase(p); !ok || r != Reason("timeout_"+p) {
			t.Errorf("ByPhase(%q) = %q, %v", p, r, ok)
		}
	}
	if _, ok := ByPhase("nonsense"); ok {
		t.Error("ByPhase of an unknown phase")
	}
}

// Table renders the vocabulary as docs/SPEC.md shows it.
func Table() string {
	var b strings.Builder
	b.WriteString("| reason | stage | meaning |\n|---|---|---|\n")
	for _, i := range All() {
		b.WriteString("| `" + string(i.Reason) + "` | " + string(i.Stage) + " | " + strings.ReplaceAll(i.Doc, "|", `\|`) + " |\n")
	}
	return b.String()
}

// TestSpecTable holds docs/SPEC.md's table of reasons to the vocabulary;
// after a change run go test ./internal/reason -run TestSpecTable -update.
func TestSpecTable(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "SPEC.md")
	spec, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- reasons: begin -->\n", "<!-- reasons: end -->\n"
	i, j := bytes.Index(spec, []byte(begin)), bytes.Index(spec, []byte(end))
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q and %q", path, begin, end)
	}
	want := []byte(begin + Table() + end)
	if bytes.Equal(spec[i:j+len(end)], want) {
		return
	}
	if *update {
		out := append(append(append([]byte(nil), spec[:i]...), want...), spec[j+len(end):]...)
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's table of reasons is out of date; run go test ./internal/reason -run TestSpecTable -update", path)
}

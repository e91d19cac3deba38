package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHarnessNotices: the harness fails a test whose server exits
// non-zero after SIGTERM, panics, logs a session's recovered panic, hits
// a Go fatal error or a data race, while a clean stop and a deliberate
// SIGKILL pass. A stand-in program (testdata/misbehave) fails in each way
// on purpose, run as a -race build as mxguard is.
func TestHarnessNotices(t *testing.T) {
	t.Parallel()
	prog := filepath.Join(t.TempDir(), "misbehave")
	if out, err := exec.Command("go", "build", "-race", "-o", prog, "./testdata/misbehave").CombinedOutput(); err != nil {
		t.Fatalf("building testdata/misbehave: %v\n%s", err, out)
	}
	tests := []struct {
		how  string
		kill bool     // end it with SIGKILL, as the crash tests do
		want []string // in the problems, in order; none for a clean end
	}{
		{how: "clean"},
		{how: "clean", kill: true},
		{how: "exit1", want: []string{"exited with exit status 1"}},
		{how: "panic", want: []string{"exited with exit status 2", `a Go panic: "panic: unrecovered, in a goroutine"`, "a goroutine trace"}},
		{how: "session-panic", want: []string{`a panic in a session: "time=`}},
		{how: "fatal", want: []string{"exited with exit status 2", `a Go panic: "fatal error: sync: unlock of unlocked mutex"`, "a goroutine trace"}},
		{how: "race", want: []string{"exited with exit status 66 (the race detector's exit code)", "a data race"}},
		// A race before a crash is still reported, from the log.
		{how: "race", kill: true, want: []string{"a data race"}},
	}
	for _, tt := range tests {
		m := &mx{t: t, dir: t.TempDir()}
		m.startCmd(exec.Command(prog, tt.how))
		if tt.kill {
			m.kill()
		} else {
			m.halt()
		}
		got := m.problems()
		if len(got) != len(tt.want) {
			t.Errorf("%s (kill %v): problems %q, want %d: %q", tt.how, tt.kill, got, len(tt.want), tt.want)
			continue
		}
		for i, w := range tt.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s (kill %v): problem %q, want it to say %q", tt.how, tt.kill, got[i], w)
			}
		}
		if again := m.problems(); again != nil {
			t.Errorf("%s: problems reported twice: %q", tt.how, again)
		}
	}
}

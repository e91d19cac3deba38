package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashDirEnv names the spool directory when the test binary runs as the
// child of TestCrashKill9.
const crashDirEnv = "MXGUARD_SPOOL_CRASH_CHILD_DIR"

// crashBody is the body of the seq'th message of a child: its size varies
// from a few bytes to a few hundred KiB, so that kills land in every phase.
func crashBody(seq int) []byte {
	line := fmt.Appendf(nil, "message %d: the quick brown fox\r\n", seq)
	n := 1 + seq%7
	if seq%10 == 0 {
		n = 5000
	}
	return bytes.Repeat(line, n)
}

// TestCrashKill9 runs a child process that commits, updates and removes
// messages in a loop, kills it with SIGKILL in mid-stream, and checks the
// spool the child leaves: every message the child reported committed is
// there and intact, every reported update is visible, nothing removed came
// back, and everything queued is a complete message. Three rounds reuse the
// directory, so recovery from one crash is itself interrupted by the next.
//
// A kill leaves the page cache alone, so this proves atomicity (no half
// message, at any point) and the order of operations, not the fsyncs; the
// package documentation argues those.
func TestCrashKill9(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	dir := t.TempDir()
	var (
		committed = map[string]int{} // id → seq
		updated   = map[string]bool{}
		removing  = map[string]bool{} // Remove started: may or may not be done
		removed   = map[string]bool{}
	)
	for round, kill := range []int{40, 150, 300} {
		lines := runAndKill(t, dir, round, kill)
		for _, l := range lines {
			op, id, seq := parseLine(t, l)
			switch op {
			case "C":
				committed[id] = seq
			case "U":
				updated[id] = true
			case "r":
				removing[id] = true
			case "R":
				removed[id] = true
			}
		}
		left, _ := os.ReadDir(filepath.Join(dir, tmpDir))
		segs, _ := os.ReadDir(filepath.Join(dir, logDir))
		t.Logf("round %d: killed after %d commits, %d lines in all, %d files in tmp/, %d log segments", round, kill, len(lines), len(left), len(segs))

		s := openSpool(t, dir)
		queued, err := s.Queued()
		if err != nil {
			t.Fatal(err)
		}
		present := map[string]bool{}
		for _, id := range queued {
			present[id] = true
			env, err := s.Envelope(id)
			if err != nil {
				t.Fatalf("round %d: queued message %s: %v", round, id, err)
			}
			seq, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(env.From, "child"), "@example.org"))
			if err != nil {
				t.Fatalf("round %d: %s has sender %q", round, id, env.From)
			}
			if got := readBody(t, s, id); !bytes.Equal(got, crashBody(seq)) {
				t.Errorf("round %d: %s: body of %d bytes differs from message %d's", round, id, len(got), seq)
			}
			if updated[id] && env.Attempts != 1 {
				t.Errorf("round %d: %s: update acknowledged but Attempts = %d", round, id, env.Attempts)
			}
		}
		for id, seq := range committed {
			if !present[id] && !removing[id] {
				t.Errorf("round %d: message %s (%d) got its 250 and is gone", round, id, seq)
			}
		}
		for id := range removed {
			if present[id] {
				t.Errorf("round %d: removed message %s is back", round, id)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(committed) < 40+150+300 {
		t.Errorf("children reported only %d commits", len(committed))
	}
}

// runAndKill starts a child on dir, kills it once it has reported kill
// commits, and returns every line it wrote before it died.
func runAndKill(t *testing.T, dir string, round, kill int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, fmt.Sprintf("MXGUARD_SPOOL_CRASH_ROUND=%d", round))
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var got []string
	commits := 0
	deadline := time.After(30 * time.Second)
	killed := false
	for !killed {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("child exited before the kill: %v", cmd.Wait())
			}
			got = append(got, l)
			if strings.HasPrefix(l, "C ") {
				commits++
			}
			if commits == kill {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		case <-deadline:
			cmd.Process.Signal(syscall.SIGKILL)
			t.Fatalf("child reported %d commits in 30s, wanted %d", commits, kill)
		}
	}
	for l := range lines { // what it wrote before the signal landed
		got = append(got, l)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child: %v, want killed", err)
	}
	return got
}

func parseLine(t *testing.T, l string) (op, id string, seq int) {
	t.Helper()
	f := strings.Fields(l)
	if len(f) != 3 || !validID(f[1]) {
		t.Fatalf("child wrote %q", l)
	}
	seq, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatalf("child wrote %q", l)
	}
	return f[0], f[1], seq
}

// crashChild commits messages from four goroutines until it is killed.
// After each step it reports on stdout ("C id seq" once Commit returned,
// "U" after Update, "r" before Remove and "R" after it). It never exits on
// its own before the parent gives up on it.
//
// Most messages are removed, some after an Update has moved them out of
// the log, and the child's log segments are small (2 KiB, a few messages
// each), so that kills also land while segments are started, retired
// and their done records carried forward past the few messages kept.
func crashChild(dir string) {
	s, err := Open(dir, nil, withSegmentSize(2<<10))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	base, _ := strconv.Atoi(os.Getenv("MXGUARD_SPOOL_CRASH_ROUND"))
	base *= 1_000_000
	var mu sync.Mutex
	report := func(op, id string, seq int) {
		mu.Lock()
		defer mu.Unlock()
		// One write(2) per line: a kill cannot leave half a line.
		io.WriteString(os.Stdout, fmt.Sprintf("%s %s %d\n", op, id, seq))
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; i < 100_000; i++ {
				seq := base + i*4 + g
				w, err := s.Create(&Envelope{From: fmt.Sprintf("child%d@example.org", seq), Rcpts: []Rcpt{{Addr: "a@x"}, {Addr: "b@x"}}})
				if err != nil {
					fail(err)
				}
				body := crashBody(seq)
				for len(body) > 0 { // several writes, like a DATA reader
					n := min(len(body), 4096)
					if _, err := w.Write(body[:n]); err != nil {
						fail(err)
					}
					body = body[n:]
				}
				id, err := w.Commit()
				if err != nil {
					fail(err)
				}
				report("C", id, seq)
				remove := seq%10 != 0 && seq%40 != 5 && seq%10 != 6 // large, or kept in the log, or kept updated
				if seq%5 == 1 {
					env, err := s.Envelope(id)
					if err != nil {
						fail(err)
					}
					env.Attempts = 1
					env.Rcpts[0].Done = true
					if err := s.Update(env); err != nil {
						fail(err)
					}
					report("U", id, seq)
				}
				if remove {
					report("r", id, seq)
					if err := s.Remove(id); err != nil {
						fail(err)
					}
					report("R", id, seq)
				}
			}
		})
	}
	wg.Wait()
	fmt.Fprintln(os.Stderr, "child: ran out of messages before the kill")
	os.Exit(3)
}

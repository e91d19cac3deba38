package doctor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// diskDir is a temporary directory on a real disk: where /tmp is a tmpfs,
// fsync costs nothing there and the check refuses it, so the test uses the
// package's own directory instead.
func diskDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if st, err := statDir(dir); err == nil && st.Volatile {
		if dir, err = os.MkdirTemp(".", "disk-test-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	return dir
}

// empty fails the test unless dir holds nothing: the checks clean up.
func empty(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("%s: %d entries left behind, first %s", dir, len(left), left[0].Name())
	}
}

// TestMeasureSync fsyncs real files on the real disk: every figure is
// there and positive (how large is the disk's business, not the test's),
// and nothing is left behind.
func TestMeasureSync(t *testing.T) {
	dir := diskDir(t)
	s, err := MeasureSync(context.Background(), dir, 20, SyncBudget)
	if err != nil {
		t.Fatal(err)
	}
	if s.Samples != 20 {
		t.Errorf("%d samples, want 20", s.Samples)
	}
	for name, l := range map[string]Latency{"file": s.File, "dir": s.Dir, "accept": s.Accept} {
		if l.P50 <= 0 || l.P99 < l.P50 {
			t.Errorf("%s fsync p50 %v, p99 %v: want 0 < p50 <= p99", name, l.P50, l.P99)
		}
	}
	if s.Accept.P50 < s.File.P50 || s.Accept.P50 < s.Dir.P50 {
		t.Errorf("accept p50 %v is less than a part of it (file %v, dir %v)", s.Accept.P50, s.File.P50, s.Dir.P50)
	}
	if s.Rate() <= 0 {
		t.Errorf("rate %v", s.Rate())
	}
	empty(t, dir)

	// The budget ends the measurement, after one sample at least.
	if s, err := MeasureSync(context.Background(), dir, 1000, 0); err != nil || s.Samples != 1 {
		t.Errorf("no budget: %d samples, %v; want 1", s.Samples, err)
	}
	// So does the operator's Ctrl-C, and what was made goes with it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := MeasureSync(ctx, dir, 20, SyncBudget); err != context.Canceled {
		t.Errorf("interrupted: %v, want context.Canceled", err)
	}
	empty(t, dir)
}

// TestFsync: the finding carries the figures and the rate; a data_dir not
// made yet is measured where serve will make it; a data_dir that cannot be
// written, or one in memory, fails.
func TestFsync(t *testing.T) {
	ctx := context.Background()
	dir := diskDir(t)
	fs := Fsync(ctx, dir, 20, SyncBudget)
	if len(fs) != 1 || fs[0].Level == Fail {
		t.Fatalf("findings %q, want one, ok or a warning (the disk decides which)", fs)
	}
	want(t, fs, CheckFsync, fs[0].Level, "on "+dir+" (", "20 samples", "file fsync p50 ", "directory fsync p50 ", "messages/s one at a time")

	notYet := filepath.Join(dir, "var", "mxguard")
	fs = Fsync(ctx, notYet, 5, SyncBudget)
	want(t, fs, CheckFsync, fs[0].Level, "on "+dir+" (", "data_dir "+notYet+" does not exist yet", "5 samples")
	empty(t, dir)

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want(t, Fsync(ctx, file, 5, SyncBudget), CheckFsync, Fail, "cannot write and fsync files in "+file)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	want(t, Fsync(cancelled, dir, 5, SyncBudget), CheckFsync, Fail, "interrupted; what it wrote in "+dir+" is removed")
	os.Remove(file)
	empty(t, dir)

	shm := "/dev/shm"
	if st, err := statDir(shm); err != nil || !st.Volatile {
		t.Logf("no tmpfs at %s (%v): the in-memory case is not tried", shm, err)
		return
	}
	want(t, Fsync(ctx, filepath.Join(shm, "mxguard-test-absent"), 5, SyncBudget), CheckFsync, Fail, "on tmpfs, in memory", "put data_dir on a disk")
}

// TestSpace: the real filesystem's figures, then the thresholds.
func TestSpace(t *testing.T) {
	dir := diskDir(t)
	fs := Space(dir)
	if len(fs) != 2 {
		t.Fatalf("findings %q, want space and inodes", fs)
	}
	for _, f := range fs {
		if f.Level == Fail {
			t.Logf("the test machine's disk is nearly full: %s", f)
		}
	}
	want(t, fs, CheckSpace, fs[0].Level, " free of ", " %) on "+dir)
	want(t, fs, CheckInodes, fs[1].Level, " free of ", " %) on "+dir)

	const gib = 1 << 30
	for _, tt := range []struct {
		name         string
		st           fsStat
		space, nodes Level
	}{
		{"plenty", fsStat{Avail: 100 * gib, Total: 200 * gib, FreeInodes: 1e6, Inodes: 2e6}, OK, OK},
		{"under 1 GiB", fsStat{Avail: gib - 1, Total: 2 * gib, FreeInodes: 1e6, Inodes: 2e6}, Warn, OK},
		{"under 5 %", fsStat{Avail: 4 * gib, Total: 100 * gib, FreeInodes: 1e6, Inodes: 2e6}, Warn, OK},
		{"under 100 MiB", fsStat{Avail: 99 << 20, Total: 200 << 20, FreeInodes: 1e6, Inodes: 2e6}, Fail, OK},
		{"under 1 %", fsStat{Avail: 9 * gib, Total: 1000 * gib, FreeInodes: 1e6, Inodes: 2e6}, Fail, OK},
		{"inodes under 100,000", fsStat{Avail: 100 * gib, Total: 200 * gib, FreeInodes: 99_999, Inodes: 1e6}, OK, Warn},
		{"inodes under 5 %", fsStat{Avail: 100 * gib, Total: 200 * gib, FreeInodes: 4e6, Inodes: 1e8}, OK, Warn},
		{"inodes under 10,000", fsStat{Avail: 100 * gib, Total: 200 * gib, FreeInodes: 9_999, Inodes: 20_000}, OK, Fail},
		{"inodes under 1 %", fsStat{Avail: 100 * gib, Total: 200 * gib, FreeInodes: 900_000, Inodes: 1e8}, OK, Fail},
		{"no inode count (btrfs)", fsStat{Avail: 100 * gib, Total: 200 * gib, Type: "btrfs"}, OK, OK},
	} {
		fs := judgeSpace("/data", "", tt.st)
		want(t, fs, CheckSpace, tt.space, "/data")
		want(t, fs, CheckInodes, tt.nodes, "/data")
	}
}

package doctor

import (
	"syscall"
	"testing"

	"github.com/mxguard/mxguard/internal/config"
)

// TestNofile runs the check against this process's real limit, with
// max_daemon_children below it, above it, and unset.
func TestNofile(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	margin := fdMargin(cfg)
	if uint64(rl.Cur) < uint64(margin)+20 || rl.Cur > 1<<30 {
		t.Skipf("RLIMIT_NOFILE %d: too low or too high to try both sides of it", rl.Cur)
	}
	cfg.Limits.MaxDaemonChildren = 10
	want(t, Nofile(cfg), CheckNofile, OK, "enough for max_daemon_children = 10")

	cfg.Limits.MaxDaemonChildren = int(rl.Cur)/2 + 1
	room := group((int64(rl.Cur) - int64(margin)) / 2)
	want(t, Nofile(cfg), CheckNofile, Fail, "RLIMIT_NOFILE "+group(int64(rl.Cur)), "LimitNOFILE=", "ulimit -n", "lower max_daemon_children to "+room)

	cfg.Limits.MaxDaemonChildren = 0
	want(t, Nofile(cfg), CheckNofile, Warn, "max_daemon_children = 0 (no limit)", "at most "+room)
}

func TestJudgeNofile(t *testing.T) {
	const unlimited = ^uint64(0)
	want(t, judgeNofile(1024, 4096, 500, 100), CheckNofile, Fail, "below the 1,100", "LimitNOFILE=2048", "ulimit -n 2048", "to 462")
	want(t, judgeNofile(1100, 4096, 500, 100), CheckNofile, OK, "needs about 1,100")
	want(t, judgeNofile(50, 50, 0, 100), CheckNofile, Fail, "below the 100 descriptors")
	want(t, judgeNofile(50, 50, 10, 100), CheckNofile, Fail, "or lower max_daemon_children")
	want(t, judgeNofile(unlimited, unlimited, 0, 100), CheckNofile, Warn, "RLIMIT_NOFILE unlimited (hard unlimited", "nothing bounds the sessions")
	want(t, judgeNofile(unlimited, unlimited, 1e6, 100), CheckNofile, OK, "needs about 2,000,100")
}

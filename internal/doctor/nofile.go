package doctor

import (
	"runtime"
	"syscall"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/server"
)

// Nofile compares the open-files limit (RLIMIT_NOFILE) with what
// max_daemon_children sessions need: each holds its connection and, while
// it stores a message, a file, so two descriptors a session, plus what the
// server holds besides (fdMargin). Too low a limit is a Fail; no
// max_daemon_children at all is a Warn, since then a flood, not the
// configuration, decides when descriptors run out.
//
// The limit read is this process's. Go raises the soft limit to the hard
// one at start, in this command as in `mxguard serve`; a systemd unit sets
// its service's own with LimitNOFILE=, which a shell does not see.
func Nofile(cfg *config.Config) []Finding {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return []Finding{finding(Fail, CheckNofile, "getrlimit RLIMIT_NOFILE: %v", err)}
	}
	return judgeNofile(uint64(rl.Cur), uint64(rl.Max), cfg.Limits.MaxDaemonChildren, fdMargin(cfg))
}

// fdMargin counts the descriptors the server holds apart from its
// sessions, at most.
func fdMargin(cfg *config.Config) int {
	m := resolve.DefaultMaxInFlight // a socket for each reverse lookup in flight
	m += 2 * server.DeliveryWorkers // each delivery: a spool file and a relay connection
	m += len(cfg.Listen) + 1        // the listeners, the control socket
	if cfg.Admin.Listen != "" {
		m++
	}
	pools := 0 // of Redis connections, go-redis's default size each
	switch {
	case cfg.Fleet.Cluster != "":
		pools = len(cfg.Fleet.Cluster.List()) // one a node (the listed ones; a cluster may have more)
	case cfg.Fleet.Shared():
		pools = 1 // the one client the limiter and the verdict cache share
	}
	if cfg.Delivery.Verify == config.VerifyProbe {
		m += cfg.Delivery.VerifyMaxProbes // connections to the relay for probes
	}
	m += pools * 10 * runtime.GOMAXPROCS(0)
	return m + 32 // standard streams, the spool's lock and directories, the poller, control connections
}

// judgeNofile holds the rule: the soft limit must cover 2 descriptors a
// session and margin.
func judgeNofile(soft, hard uint64, children, margin int) []Finding {
	limit := func(n uint64) string {
		if n >= 1<<62 {
			return "unlimited"
		}
		return group(int64(n))
	}
	have := "RLIMIT_NOFILE " + limit(soft) + " (hard " + limit(hard) + "; under systemd the unit's LimitNOFILE= decides)"
	// The most sessions this limit leaves room for.
	room := int64(0)
	if soft > uint64(margin) {
		room = int64(min(soft-uint64(margin), 1<<62) / 2)
	}
	if children == 0 {
		const set = "max_daemon_children = 0 (no limit): a flood can open sessions until the descriptors run out, " +
			"and then no connection is accepted and no message stored"
		switch {
		case room == 0:
			return []Finding{finding(Fail, CheckNofile, "%s: below the %d descriptors mxguard needs besides its sessions; "+
				"raise it (LimitNOFILE=65536 in the systemd unit, or ulimit -n 65536)", have, margin)}
		case soft >= 1<<62:
			return []Finding{finding(Warn, CheckNofile, "%s; max_daemon_children = 0 (no limit): nothing bounds the sessions a flood can open; "+
				"set max_daemon_children", have)}
		}
		return []Finding{finding(Warn, CheckNofile, "%s; %s; set max_daemon_children to at most %s (2 descriptors a session, %d kept for the rest)",
			have, set, group(room), margin)}
	}
	need := uint64(2*children + margin)
	if soft < need {
		raise := (need + 1023) / 1024 * 1024
		text := "lower max_daemon_children"
		if room > 0 {
			text += " to " + group(room)
		}
		return []Finding{finding(Fail, CheckNofile, "%s: below the %s that max_daemon_children = %s needs (2 a session + %d for listeners, DNS lookups, deliveries); "+
			"raise it (LimitNOFILE=%d in the systemd unit, or ulimit -n %d before mxguard serve) or %s",
			have, group(int64(need)), group(int64(children)), margin, raise, raise, text)}
	}
	return []Finding{finding(OK, CheckNofile, "%s: enough for max_daemon_children = %s, which needs about %s (2 a session + %d)",
		have, group(int64(children)), group(int64(need)), margin)}
}

package redistest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestLifecycle(t *testing.T) {
	s := StartServer(t)
	if err := ping(s.Addr, ""); err != nil {
		t.Fatalf("fresh server: %v", err)
	}

	s.Stop()
	if err := ping(s.Addr, ""); err == nil {
		t.Fatal("stopped server still answers PING")
	}
	s.Stop() // idempotent

	s.Restart()
	if err := ping(s.Addr, ""); err != nil {
		t.Fatalf("restarted server: %v", err)
	}

	s.Pause()
	if err := ping(s.Addr, ""); err == nil {
		t.Fatal("paused server answers PING")
	}
	s.Resume()
	if err := ping(s.Addr, ""); err != nil {
		t.Fatalf("resumed server: %v", err)
	}
}

func TestStartAddr(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two servers share the address %s", a)
	}
	for _, addr := range []string{a, b} {
		if err := ping(addr, ""); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

// recorder stands in for the test to observe Fatal and Skip without ending
// the real test.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestMissingServer: without redis-server the test fails, and says which
// Debian package to install, whether CI is set or not.
func TestMissingServer(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				StartServer(r)
			}()
			<-done
			if r.fatal == "" {
				t.Fatalf("missing redis-server: no Fatal (skip: %q)", r.skip)
			}
			if !strings.Contains(r.fatal, "Debian package redis-server") {
				t.Errorf("missing redis-server: %q does not name the Debian package", r.fatal)
			}
		})
	}
}

// TestSentinels: the Sentinels know the primary at start, and promote the
// replica when the primary is killed.
func TestSentinels(t *testing.T) {
	t.Parallel()
	g := StartSentinels(t, SentinelConfig{Password: "s3cret"})
	first := g.Primary()
	if first != g.Data[0] {
		t.Fatalf("primary at start = %s, want %s", first.Addr, g.Data[0].Addr)
	}
	if err := ping(g.Watchers[0].Addr, ""); err == nil {
		t.Error("a sentinel with a password answers PING without AUTH")
	}
	killed := g.KillPrimary()
	start := time.Now()
	p := g.WaitPromoted(killed, 30*time.Second)
	t.Logf("replica %s promoted %v after the primary was killed", p.Addr, time.Since(start).Round(time.Millisecond))
	if p != g.Data[1] {
		t.Errorf("promoted %s, want the replica %s", p.Addr, g.Data[1].Addr)
	}
}

// TestCluster: three primaries share the slots and agree.
func TestCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := StartCluster(t, 3)
	t.Logf("cluster of %d up in %v", len(c.Nodes), time.Since(start).Round(time.Millisecond))
	for _, s := range c.Nodes {
		if got := info(t, s.Addr, "cluster")["cluster_enabled"]; got != "1" {
			t.Errorf("%s: cluster_enabled = %q", s.Addr, got)
		}
	}
}

package redistest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func TestLifecycle(t *testing.T) {
	s := StartServer(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("fresh server: %v", err)
	}

	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatal("stopped server still answers PING")
	}
	s.Stop() // idempotent

	s.Restart()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("restarted server: %v", err)
	}

	s.Pause()
	if err := ping(s.Addr); err == nil {
		t.Fatal("paused server answers PING")
	}
	s.Resume()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("resumed server: %v", err)
	}
}

func TestStartAddr(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two servers share the address %s", a)
	}
	for _, addr := range []string{a, b} {
		if err := ping(addr); err != nil {
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

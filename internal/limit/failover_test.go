package limit

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Policy
		wantErr bool
	}{
		{"local", PolicyLocal, false},
		{"tempfail", PolicyTempfail, false},
		{"", "", true},
		{"Local", "", true},
		{"fail", "", true},
	} {
		got, err := ParsePolicy(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParsePolicy(%q) = %q, %v", tc.in, got, err)
		}
	}
}

// fleetNode is one node under test: Redis behind a Failover, logging into
// a buffer.
type fleetNode struct {
	srv *redistest.Server
	l   *Failover
	log *syncBuffer
}

func newFleetNode(t *testing.T, policy Policy) fleetNode {
	t.Helper()
	srv := redistest.StartServer(t)
	log := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(log, nil))
	// A loaded machine can keep a healthy Redis from answering within the
	// default 100ms, which would look like an outage.
	r := newTestRedis(t, RedisOptions{Addr: srv.Addr, Timeout: time.Second, LeaseTTL: time.Second})
	return fleetNode{srv: srv, l: NewFailover(r, newTestMemory(t, nil), policy, logger), log: log}
}

// waitRecovered calls Rate until the primary answers again, within a
// bound of several retry intervals: on a loaded machine a probe may fail.
func waitRecovered(t *testing.T, l *Failover) {
	t.Helper()
	deadline := time.Now().Add(10 * retryInterval)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for l.down.Load() {
		_, _ = l.Rate(context.Background(), "probe", time.Minute, 100)
		if time.Now().After(deadline) {
			t.Fatal("not recovered after Redis came back")
		}
		<-tick.C
	}
}

func TestFailoverLocal(t *testing.T) {
	t.Parallel() // mostly waiting for the retry interval
	n := newFleetNode(t, PolicyLocal)
	ctx := context.Background()
	rate := func(want int) {
		t.Helper()
		got, err := n.l.Rate(ctx, "192.0.2.9", time.Minute, 5)
		if err != nil || got != want {
			t.Errorf("Rate = %d, %v; want %d", got, err, want)
		}
	}
	for i := 1; i <= 3; i++ {
		rate(i)
	}
	_, release, err := n.l.Acquire(ctx, "192.0.2.9")
	if err != nil {
		t.Fatal(err)
	}

	n.srv.Stop()
	// The local counters have been counting all along: the outage does
	// not hand the client a fresh allowance.
	for i := 4; i <= 7; i++ {
		rate(min(i, 6))
	}
	if c, rel, err := n.l.Acquire(ctx, "192.0.2.9"); err != nil || c != 2 {
		t.Errorf("Acquire during outage = %d, %v; want 2", c, err)
	} else {
		rel()
		rel() // idempotent
	}
	release()
	if c, rel, _ := n.l.Acquire(ctx, "192.0.2.9"); c != 1 {
		t.Errorf("Acquire after releases = %d, want 1", c)
	} else {
		rel()
	}
	if got := strings.Count(n.log.String(), "unreachable"); got != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", got, n.log)
	}

	n.srv.Restart()
	waitRecovered(t, n.l)
	if !strings.Contains(n.log.String(), "reachable again") {
		t.Errorf("recovery not logged:\n%s", n.log)
	}
	// Back on Redis, which restarted empty.
	if got, err := n.l.Rate(ctx, "192.0.2.10", time.Minute, 5); err != nil || got != 1 {
		t.Errorf("Rate after recovery = %d, %v; want 1", got, err)
	}
}

func TestFailoverTempfail(t *testing.T) {
	t.Parallel() // mostly waiting for the timeout and the retry interval
	// Timeout is 1s: without it a call to a hung Redis would never
	// return. The bound leaves room for a loaded machine.
	const bound = 5 * time.Second
	tests := []struct {
		name        string
		outage, end func(*redistest.Server)
	}{
		{"stopped", (*redistest.Server).Stop, (*redistest.Server).Restart},
		{"hung", (*redistest.Server).Pause, (*redistest.Server).Resume},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newFleetNode(t, PolicyTempfail)
			ctx := context.Background()
			if _, err := n.l.Rate(ctx, "a", time.Minute, 5); err != nil {
				t.Fatal(err)
			}

			tc.outage(n.srv)
			for i := range 3 { // the first waits for the timeout, the rest do not
				start := time.Now()
				_, err := n.l.Rate(ctx, "a", time.Minute, 5)
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("Rate %d during outage: %v, want ErrUnavailable", i, err)
				}
				_, release, err := n.l.Acquire(ctx, "a")
				if !errors.Is(err, ErrUnavailable) || release != nil {
					t.Errorf("Acquire %d during outage: %v, want ErrUnavailable", i, err)
				}
				if d := time.Since(start); d > bound {
					t.Errorf("call %d during outage took %v, want under %v", i, d, bound)
				}
			}

			tc.end(n.srv)
			waitRecovered(t, n.l)
			if c, release, err := n.l.Acquire(ctx, "a"); err != nil || c != 1 {
				t.Errorf("Acquire after recovery = %d, %v; want 1", c, err)
			} else {
				release()
			}
		})
	}
}

// TestFailoverCallerCancel checks that a caller giving up is not taken for
// an outage.
func TestFailoverCallerCancel(t *testing.T) {
	n := newFleetNode(t, PolicyLocal)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := n.l.Rate(ctx, "a", time.Minute, 5); !errors.Is(err, context.Canceled) {
		t.Errorf("Rate with a cancelled context: %v", err)
	}
	if _, _, err := n.l.Acquire(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context: %v", err)
	}
	if n.l.down.Load() || n.log.String() != "" {
		t.Errorf("cancelled calls marked Redis down; log:\n%s", n.log)
	}
}

// TestFailoverBadArguments checks that a caller's mistake is reported as
// such and not taken for an outage.
func TestFailoverBadArguments(t *testing.T) {
	n := newFleetNode(t, PolicyTempfail)
	_, err := n.l.Rate(context.Background(), "a", 0, 5)
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Errorf("Rate with a zero window: %v, want an argument error", err)
	}
	if n.l.down.Load() {
		t.Error("bad arguments marked Redis down")
	}
}

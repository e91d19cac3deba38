package limit

import (
	"context"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

// tripCounter is a go-redis hook that counts round trips (a command, or a
// pipeline of them) and the commands in them.
type tripCounter struct {
	trips, cmds atomic.Int64
}

func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.trips.Add(1)
		c.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.trips.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// take returns the round trips and commands since the last take.
func (c *tripCounter) take() (trips, cmds int64) {
	return c.trips.Swap(0), c.cmds.Swap(0)
}

// TestRedisRoundTrips counts what each operation costs in round trips,
// from the client (a hook) and from the server (MONITOR), so that the
// figures in BENCHMARKS.md and DESIGN.md cannot grow unnoticed. Lease
// renewal costs one round trip per node per LeaseTTL/3, whatever the
// number of leases, with one script call per key that has open
// connections.
func TestRedisRoundTrips(t *testing.T) {
	addr := redistest.Start(t)
	mon := redistest.NewMonitor(t, addr)
	r := newTestRedis(t, RedisOptions{Addr: addr, LeaseTTL: time.Hour}) // renew is called by hand
	hook := &tripCounter{}
	r.client.AddHook(hook)
	ctx := context.Background()

	step := func(name string, fn func(), trips, cmds int64, server []string) {
		t.Helper()
		fn()
		gotTrips, gotCmds := hook.take()
		if gotTrips != trips || gotCmds != cmds {
			t.Errorf("%s: %d round trips, %d commands; want %d, %d", name, gotTrips, gotCmds, trips, cmds)
		}
		if got := mon.Take(); !slices.Equal(got, server) {
			t.Errorf("%s: the server saw %v, want %v", name, got, server)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rate := func(key string, limit int) func() {
		return func() { _, err := r.Rate(ctx, key, time.Minute, limit); must(err) }
	}
	var releases []func()
	acquire := func(key string) func() {
		return func() {
			_, release, err := r.Acquire(ctx, key)
			must(err)
			releases = append(releases, release)
		}
	}

	// A new connection starts with HELLO; a script unknown to the server
	// is answered NOSCRIPT and sent again in full (EVAL).
	step("first Rate: connection opened, script loaded", rate("a", 5), 3, 3, []string{"hello", "evalsha", "eval"})
	step("Rate", rate("b", 5), 1, 1, []string{"evalsha"})
	step("first Rate above ExactRateLimit", rate("a", approxLimit), 2, 2, []string{"evalsha", "eval"})
	step("Rate above ExactRateLimit", rate("b", approxLimit), 1, 1, []string{"evalsha"})
	step("first Acquire", acquire("a"), 2, 2, []string{"evalsha", "eval"})
	step("Acquire", acquire("a"), 1, 1, []string{"evalsha"})
	for i := range 98 {
		acquire("k" + strconv.Itoa(i%49))()
	}
	hook.take()
	mon.Take()
	// 100 leases on 50 keys: one round trip, one script call a key. The
	// first time, go-redis opens a connection of its pipeline pool, and the
	// renewal script, never loaded, is loaded and the pipeline sent again.
	first := append([]string{"hello"}, slices.Repeat([]string{"evalsha"}, 50)...)
	first = append(append(first, "script"), slices.Repeat([]string{"evalsha"}, 50)...)
	step("first renewal", func() { must(r.renew(ctx)) }, 4, 102, first)
	step("renewal", func() { must(r.renew(ctx)) }, 1, 50, slices.Repeat([]string{"evalsha"}, 50))
	step("release", func() { releases[0]() }, 1, 1, []string{"zrem"})
	step("release again", func() { releases[0]() }, 0, 0, nil)
}

package limit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/mxguard/mxguard/internal/redisconn"
	"github.com/mxguard/mxguard/internal/redistest"
)

// sharedNode is one node's limiter as the server builds it: Redis (on a
// client of its own, from redisconn) behind a Failover to Memory, with the
// Failover's changes of state recorded.
type sharedNode struct {
	*Failover
	mu     sync.Mutex
	states []bool // down, in order
}

func newSharedNode(t *testing.T, id string, opts redisconn.Options) *sharedNode {
	t.Helper()
	c, err := redisconn.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r, err := NewRedis(RedisOptions{Client: c, NodeID: id, Timeout: opts.Timeout}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	mem := NewMemory(nil)
	t.Cleanup(mem.Close)
	n := &sharedNode{}
	n.Failover = NewFailover(r, mem, PolicyLocal, nil, WithHooks(func(down bool) {
		n.mu.Lock()
		n.states = append(n.states, down)
		n.mu.Unlock()
	}, func() {}))
	return n
}

func (n *sharedNode) changes() []bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]bool(nil), n.states...)
}

// TestRedisSentinelFailover: two nodes count in the primary that three
// Sentinels watch; the primary is killed (SIGKILL). While the Sentinels
// elect and promote the replica, every call answers at once from the
// node's own counts; after the promotion the nodes share their counts
// again, on the promoted replica, which holds the counts from before. The
// time from the kill to shared counts is logged.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel() // mostly waiting for the Sentinels
	const pass = "sentinel-secret"
	g := redistest.StartSentinels(t, redistest.SentinelConfig{Password: pass})
	// A loaded machine can keep a healthy Redis from answering within the
	// default 100ms, which would look like an outage of its own.
	opts := redisconn.Options{Sentinel: g.Addrs(), MasterName: g.MasterName, SentinelPassword: pass, Timeout: time.Second}
	a, b := newSharedNode(t, "a", opts), newSharedNode(t, "b", opts)
	ctx := context.Background()

	rate := func(node *sharedNode, key string) (int, time.Duration) {
		t.Helper()
		start := time.Now()
		n, err := node.Rate(ctx, key, time.Minute, 10)
		if err != nil {
			t.Fatalf("Rate(%s) = %v: with policy local a node always answers", key, err)
		}
		return n, time.Since(start)
	}
	for i, node := range []*sharedNode{a, b} {
		if n, _ := rate(node, "192.0.2.1"); n != i+1 {
			t.Fatalf("before the failover: connection %d counted %d, want %d (shared)", i+1, n, i+1)
		}
	}
	for i, node := range []*sharedNode{a, b} {
		n, _, err := node.Acquire(ctx, "192.0.2.2") // held to the end
		if err != nil || n != i+1 {
			t.Fatalf("before the failover: Acquire %d = %d, %v; want %d", i+1, n, err, i+1)
		}
	}
	// The replica has what the primary had: a promotion loses nothing
	// that was written before this.
	primary := g.Primary()
	pc := plainClient(primary.Addr)
	defer pc.Close()
	if n, err := pc.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	g.KillPrimary()
	killed := time.Now()
	var (
		shared     time.Duration
		local      int           // probes the nodes counted apart
		slowest    time.Duration // the longest a call took
		probe      string
		deadline   = killed.Add(30 * time.Second)
		firstLocal time.Duration
	)
	for i := 0; ; i++ {
		probe = fmt.Sprintf("198.51.100.%d/%d", i%250, i/250) // a fresh key each time
		na, da := rate(a, probe)
		nb, db := rate(b, probe)
		slowest = max(slowest, da, db)
		if na == 1 && nb == 2 {
			shared = time.Since(killed)
			break
		}
		if local == 0 {
			firstLocal = time.Since(killed)
		}
		local++
		if time.Now().After(deadline) {
			t.Fatalf("no shared counts 30s after the primary was killed (last probe: %d, %d)", na, nb)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("primary killed: nodes counted on their own after %v; shared again after %v (%d probes counted apart); the slowest call took %v",
		firstLocal.Round(time.Millisecond), shared.Round(time.Millisecond), local, slowest.Round(time.Millisecond))
	if local == 0 {
		t.Fatal("the nodes shared counts all along: the outage was never seen, so the fallback was not tested")
	}
	// One failed call to the primary costs at most the 100 ms timeout,
	// and retries wait a second; a second for a call is a loaded machine's
	// margin, far below the outage.
	if slowest > time.Second {
		t.Errorf("a call took %v during the failover", slowest)
	}

	promoted := g.WaitPromoted(primary, 30*time.Second)
	rc := plainClient(promoted.Addr)
	defer rc.Close()
	if n, err := rc.Exists(ctx, DefaultKeyPrefix+"rate:{"+probe+"}").Result(); err != nil || n != 1 {
		t.Errorf("the shared probe is not on the promoted replica %s: %d, %v", promoted.Addr, n, err)
	}
	if n, _ := rate(a, "192.0.2.1"); n != 3 {
		t.Errorf("after the failover: 3rd connection of a client counted before counted %d, want 3", n)
	}
	if n, release, err := b.Acquire(ctx, "192.0.2.2"); err != nil || n != 3 {
		t.Errorf("after the failover: 3rd open connection counted %d, %v; want 3", n, err)
	} else {
		release()
	}
	for name, node := range map[string]*sharedNode{"a": a, "b": b} {
		if got := node.changes(); len(got) != 2 || !got[0] || got[1] {
			t.Errorf("node %s changed state %v, want [true false] (down once, up once)", name, got)
		}
	}
}

// TestRedisCluster: two nodes count in a Redis Cluster of three
// primaries. Their counts are shared; every key of one client is on one
// shard (the hash tag), while clients spread over the shards; the lease
// renewal, a pipeline over several shards, keeps leases alive.
func TestRedisCluster(t *testing.T) {
	t.Parallel() // mostly waiting for the cluster to form
	cl := redistest.StartCluster(t, 3)
	opts := redisconn.Options{Cluster: cl.Addrs(), Timeout: time.Second}
	a, b := newSharedNode(t, "a", opts), newSharedNode(t, "b", opts)
	// Renewed every LeaseTTL/3: a lease outlives LeaseTTL only if the
	// renewal reaches its shard.
	const ttl = time.Second
	ca, err := redisconn.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	la, err := NewRedis(RedisOptions{Client: ca, NodeID: "lease", LeaseTTL: ttl, Timeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	ctx := context.Background()

	const clients = 24
	shards := make(map[string]bool)
	for i := range clients {
		ip := fmt.Sprintf("192.0.2.%d", i)
		for j, node := range []*sharedNode{a, b, a} {
			if n, err := node.Rate(ctx, ip, time.Minute, 10); err != nil || n != j+1 {
				t.Fatalf("%s: connection %d counted %d, %v; want %d (shared)", ip, j+1, n, err, j+1)
			}
		}
		if _, _, err := la.Acquire(ctx, ip); err != nil { // held
			t.Fatal(err)
		}
		n, release, err := b.Acquire(ctx, ip)
		if err != nil || n != 2 {
			t.Fatalf("%s: 2nd open connection counted %d, %v; want 2", ip, n, err)
		}
		release()

		rateAt := shardOf(t, cl, la.key("rate", ip))
		if connAt := shardOf(t, cl, la.key("conn", ip)); connAt != rateAt {
			t.Errorf("%s: its rate log is on %s, its leases on %s: one client's keys must share a shard", ip, rateAt, connAt)
		}
		shards[rateAt] = true
	}
	if len(shards) < 2 {
		t.Errorf("%d clients' keys all on %v: the clients do not spread over the shards", clients, shards)
	}
	if failed := a.changes(); len(failed) > 0 {
		t.Errorf("node a lost the cluster: %v", failed)
	}

	time.Sleep(3 * ttl)
	for i := range clients {
		ip := fmt.Sprintf("192.0.2.%d", i)
		n, release, err := a.Acquire(ctx, ip)
		if err != nil || n != 2 {
			t.Errorf("%s after 3 lease TTLs: counted %d, %v; want 2 (the renewed lease and this one)", ip, n, err)
			continue
		}
		release()
	}
}

// shardOf returns the address of the cluster node that holds key; it
// fails the test when none does.
func shardOf(t *testing.T, cl *redistest.Cluster, key string) string {
	t.Helper()
	for _, addr := range cl.Addrs() {
		c := plainClient(addr)
		n, err := c.Exists(context.Background(), key).Result()
		c.Close()
		switch {
		case err == nil && n == 1:
			return addr
		case err != nil && !redis.HasErrorPrefix(err, "MOVED"): // MOVED: another node's slot
			t.Fatalf("EXISTS %s on %s: %v", key, addr, err)
		}
	}
	t.Fatalf("no cluster node holds %s", key)
	return ""
}

// plainClient talks to one server, not through the fleet's client.
func plainClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
}

package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redisconn"
)

// Defaults for RedisOptions.
const (
	DefaultKeyPrefix = "mxguard:"
	DefaultLeaseTTL  = 30 * time.Second
	DefaultTimeout   = redisconn.DefaultTimeout
)

// RedisOptions configures a Redis limiter.
type RedisOptions struct {
	// Client, when set, is the node's Redis client (internal/redisconn),
	// shared with its other users: URL and Addr are then ignored, and
	// Close leaves the client open for its owner to close.
	Client redis.UniversalClient
	// URL is a redis://, rediss:// or unix:// URL (see redis.ParseURL).
	// When empty, Addr is used.
	URL string
	// Addr is the server's host:port.
	Addr string
	// KeyPrefix starts every key this limiter writes; DefaultKeyPrefix when
	// empty. Nodes that share counters must share it.
	KeyPrefix string
	// NodeID names this node in its connection leases; the host name when
	// empty. A random suffix is added per process, so that a restarted
	// node never mistakes its predecessor's leases for its own.
	NodeID string
	// LeaseTTL is how long an open connection is counted without news from
	// its node: a node renews its leases every LeaseTTL/3, so the counts
	// of a node that dies fall back within LeaseTTL. DefaultLeaseTTL when
	// zero.
	LeaseTTL time.Duration
	// Timeout bounds each call to Redis, so that an unreachable server
	// costs a connection at most this much; DefaultTimeout when zero.
	Timeout time.Duration
	// Now, when set, stamps connections with this clock instead of the
	// Redis server's (TIME). Every node of a fleet must use the same
	// clock, which the server's is; Now is for tests.
	Now func() time.Time
}

// Redis is a Limiter that keeps its counters in a Redis server, shared by
// every node that uses the same server and key prefix.
//
// Each operation is one Lua script, run atomically by the server. The rate
// log of a key is a sorted set of connection times (above ExactRateLimit, a
// hash of two fixed windows' counts instead); the open connections of a key
// are a sorted set of leases (node and connection, scored by expiry), which
// this node renews in the background while the connections last. Every key
// expires on its own once unused.
//
// Each script touches one key, and a client's keys name it in a hash tag
// (mxguard:rate:{192.0.2.7}, mxguard:conn:{192.0.2.7}), so that in a Redis
// Cluster every key of one client lands on one slot while the clients
// spread over the shards.
type Redis struct {
	client   redis.UniversalClient
	ownsConn bool // the client is this limiter's own, closed by Close
	logger   *slog.Logger
	prefix   string
	instance string // NodeID plus the per-process suffix
	leaseTTL time.Duration
	timeout  time.Duration
	now      func() time.Time

	seq atomic.Uint64 // numbers rate log members and leases

	mu     sync.Mutex
	leases map[uint64]lease // this node's open connections

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

type lease struct {
	key, member string
}

// The scripts take the time as ARGV[1] in milliseconds, or "" to read the
// server's clock. Milliseconds keep scores well inside a double's exact
// integers.
const scriptNow = `
local now = tonumber(ARGV[1])
if now == nil then
	local t = redis.call('TIME')
	now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// rateScript: KEYS[1] the rate log; ARGV: now, window (ms), keep (limit+1),
// member. Returns the number of connections in the window.
var rateScript = redis.NewScript(scriptNow + `
local window = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1))
local n = redis.call('ZCARD', KEYS[1])
redis.call('PEXPIRE', KEYS[1], window)
return n
`)

// windowScript is the sliding-window counter of limits above
// ExactRateLimit (Memory.count does the same): KEYS[1] a hash of the window
// length (w), the current fixed window's number (n) and the connections in
// it (c) and in the one before (p); ARGV: now, window (ms), keep (limit+1).
// Returns the estimate of the connections in the sliding window, at most
// keep. The hash lives until the current window's counts stop weighing,
// the end of the next window.
var windowScript = redis.NewScript(scriptNow + `
local window = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local idx = math.floor(now / window)
local h = redis.call('HMGET', KEYS[1], 'w', 'n', 'c', 'p')
local cur, prev = 0, 0
if tonumber(h[1]) == window then
	local n = tonumber(h[2])
	-- A clock that steps back (another node's) stays in the newest window.
	if idx < n then
		idx = n
	end
	if idx == n then
		cur, prev = tonumber(h[3]), tonumber(h[4])
	elseif idx == n + 1 then
		prev = tonumber(h[3])
	end
end
cur = cur + 1
redis.call('HSET', KEYS[1], 'w', window, 'n', idx, 'c', cur, 'p', prev)
redis.call('PEXPIRE', KEYS[1], (idx + 2) * window - now)
local elapsed = math.max(now - idx * window, 0)
local est = cur + math.floor(prev * (window - elapsed) / window)
return math.min(est, keep)
`)

// A lease set lives as long as its longest lease; nodes may have different
// TTLs, so one never shortens another's.
const scriptExpire = `
if redis.call('PTTL', KEYS[1]) < ttl then
	redis.call('PEXPIRE', KEYS[1], ttl)
end
`

// acquireScript: KEYS[1] the lease set; ARGV: now, ttl (ms), member.
// Returns the number of live leases.
var acquireScript = redis.NewScript(scriptNow + `
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
` + scriptExpire + `
return n
`)

// renewScript: KEYS[1] the lease set; ARGV: now, ttl (ms), members...
// It adds leases that are missing too: after Redis restarts empty, the
// connections still open are counted again at the next renewal.
var renewScript = redis.NewScript(scriptNow + `
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 3, #ARGV do
	redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
` + scriptExpire + `
return 0
`)

// NewRedis returns a Redis limiter and starts its lease renewal; Close
// stops it. It does not contact the server: a server that is down at start
// is the same outage as one that goes down later.
func NewRedis(opts RedisOptions, logger *slog.Logger) (*Redis, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	switch {
	case opts.Timeout < 0:
		return nil, fmt.Errorf("limit: redis timeout %v is negative", opts.Timeout)
	case opts.LeaseTTL < 3*time.Millisecond:
		return nil, fmt.Errorf("limit: redis lease TTL %v is too short", opts.LeaseTTL)
	}

	client, owns, err := redisconn.Given(opts.Client, opts.URL, opts.Addr, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("limit: %w", err)
	}

	nodeID := opts.NodeID
	if nodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			h = "node"
		}
		nodeID = h
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:]) // never fails (crypto/rand)

	ctx, stop := context.WithCancel(context.Background())
	r := &Redis{
		client:   client,
		ownsConn: owns,
		logger:   logger,
		prefix:   opts.KeyPrefix,
		instance: nodeID + "/" + hex.EncodeToString(suffix[:]),
		leaseTTL: opts.LeaseTTL,
		timeout:  opts.Timeout,
		now:      opts.Now,
		leases:   make(map[uint64]lease),
		stop:     stop,
		done:     make(chan struct{}),
	}
	go r.renewLoop(ctx)
	return r, nil
}

// Close stops lease renewal, removes this node's remaining leases (best
// effort: they would expire anyway) and closes the connections to Redis,
// unless the client was given in RedisOptions.Client.
func (r *Redis) Close() {
	r.closeOnce.Do(func() {
		r.stop()
		<-r.done
		r.mu.Lock()
		leases := r.leases
		r.leases = make(map[uint64]lease)
		r.mu.Unlock()
		if len(leases) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			pipe := r.client.Pipeline()
			for _, l := range leases {
				pipe.ZRem(ctx, l.key, l.member)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				r.logger.Debug("limit: redis: removing leases at close", "err", err)
			}
			cancel()
		}
		if r.ownsConn {
			_ = r.client.Close()
		}
	})
}

// Ping checks that the server answers, within the timeout; for start-up
// checks and health reports. The limiter works without it.
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("limit: redis: %w", err)
	}
	return nil
}

// Rate implements Limiter.
func (r *Redis) Rate(ctx context.Context, key string, window time.Duration, limit int) (int, error) {
	if err := checkRate(window, limit); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	script, keys, args := r.rateCall(key, window, limit)
	n, err := script.Run(ctx, r.client, keys, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("limit: redis rate: %w", err)
	}
	return n, nil
}

// rateCall is the script Rate runs, its keys and its arguments. The log
// and the counter of a key are different keys of different types: a key
// whose limit crosses ExactRateLimit (an access map entry changed) starts
// afresh in the other, and the one left behind expires.
func (r *Redis) rateCall(key string, window time.Duration, limit int) (*redis.Script, []string, []any) {
	if limit > ExactRateLimit {
		return windowScript, []string{r.key("ratec", key)},
			[]any{r.nowArg(), ceilMillis(window), limit + 1}
	}
	return rateScript, []string{r.key("rate", key)},
		[]any{r.nowArg(), ceilMillis(window), limit + 1, r.member(r.seq.Add(1))}
}

// Acquire implements Limiter. The release function is idempotent; it
// removes the lease with one call to Redis, bounded by the timeout, and
// leaves it to expire if that fails.
func (r *Redis) Acquire(ctx context.Context, key string) (int, func(), error) {
	id := r.seq.Add(1)
	l := lease{key: r.key("conn", key), member: r.member(id)}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	n, err := acquireScript.Run(ctx, r.client, []string{l.key},
		r.nowArg(), r.leaseTTL.Milliseconds(), l.member,
	).Int()
	if err != nil {
		// The script may have run all the same; unrenewed, that lease
		// expires after LeaseTTL.
		return 0, nil, fmt.Errorf("limit: redis acquire: %w", err)
	}
	r.mu.Lock()
	r.leases[id] = l
	r.mu.Unlock()

	var released atomic.Bool
	release := func() {
		if released.Swap(true) {
			return
		}
		r.mu.Lock()
		delete(r.leases, id)
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		defer cancel()
		if err := r.client.ZRem(ctx, l.key, l.member).Err(); err != nil {
			r.logger.Debug("limit: redis release failed; lease will expire",
				"key", key, "ttl", r.leaseTTL, "err", err)
		}
	}
	return n, release, nil
}

// maxInstance bounds the instance's part of a member. Redis keeps a small
// sorted set compactly (a listpack) only while every member is at most 64
// bytes (zset-max-listpack-value); past that the whole set becomes a
// skiplist, 5.7 times the memory per client (measured with a 68-character
// NodeID). A cloud host name (ip-172-31-22-145.eu-central-1.compute.internal)
// with the suffix and a sequence number would cross it.
const maxInstance = 40

// key is the Redis key of a client's counter of kind ("rate", "ratec", "conn"): the
// client in a hash tag, so that a Redis Cluster hashes only that part and
// keeps all of one client's keys on one slot.
func (r *Redis) key(kind, client string) string {
	return r.prefix + kind + ":{" + client + "}"
}

func (r *Redis) member(id uint64) string {
	inst := r.instance
	if len(inst) > maxInstance {
		// Keep the host name's start, to tell nodes apart by eye, and
		// the per-process suffix after the last "/", which makes members
		// unique.
		suffix := inst[strings.LastIndexByte(inst, '/')+1:]
		if len(suffix) >= maxInstance {
			suffix = suffix[len(suffix)-maxInstance/2:]
		}
		return inst[:maxInstance-len(suffix)-1] + "/" + suffix + ":" + strconv.FormatUint(id, 10)
	}
	return inst + ":" + strconv.FormatUint(id, 10)
}

func (r *Redis) nowArg() string {
	if r.now == nil {
		return ""
	}
	return strconv.FormatInt(r.now().UnixMilli(), 10)
}

func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func (r *Redis) renewLoop(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.leaseTTL / 3)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.renew(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			r.logger.Warn("limit: redis: cannot renew connection leases", "err", err)
			failing = true
		case err == nil && failing:
			r.logger.Info("limit: redis: connection leases renewed again")
			failing = false
		}
	}
}

// renew extends this node's leases, one script call per key, pipelined.
// A connection released while a renewal is in flight may have its lease put
// back; it is then counted until it expires, one LeaseTTL at most.
func (r *Redis) renew(ctx context.Context) error {
	r.mu.Lock()
	byKey := make(map[string][]any, len(r.leases))
	for _, l := range r.leases {
		byKey[l.key] = append(byKey[l.key], l.member)
	}
	r.mu.Unlock()
	if len(byKey) == 0 {
		return nil
	}

	// Renewal is not on any connection's path; give it the renewal period.
	ctx, cancel := context.WithTimeout(ctx, max(r.leaseTTL/3, r.timeout))
	defer cancel()
	run := func() error {
		pipe := r.client.Pipeline()
		for key, members := range byKey {
			args := append([]any{r.nowArg(), r.leaseTTL.Milliseconds()}, members...)
			renewScript.EvalSha(ctx, pipe, []string{key}, args...)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A restarted server has forgotten the script.
		if err := renewScript.Load(ctx, r.client).Err(); err != nil {
			return err
		}
		err = run()
	}
	return err
}

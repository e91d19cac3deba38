package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redisconn"
)

// Defaults for RedisOptions.
const (
	// DefaultKeyPrefix is the fleet's prefix, the one internal/limit uses
	// too; users of the cache add their own namespace to their keys
	// ("verify:...").
	DefaultKeyPrefix = "mxguard:"
	DefaultTimeout   = redisconn.DefaultTimeout
)

// retryInterval is how long Redis leaves a failed server alone before
// trying it again; meanwhile calls go to the fallback at once instead of
// each waiting for a timeout.
const retryInterval = time.Second

// RedisOptions configures a Redis cache.
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
	// KeyPrefix starts every key; DefaultKeyPrefix when empty. Nodes that
	// share the cache must share it.
	KeyPrefix string
	// Timeout bounds each call to Redis; DefaultTimeout when zero.
	Timeout time.Duration
}

// Redis is a Cache kept in a Redis server, shared by every node that uses
// the same server and key prefix. Each value is one string key, written
// with SET ... PX so that Redis expires it.
//
// When Redis fails (unreachable, hung, erring) the cache goes on in the
// fallback Memory, and says so in the log once; it tries Redis again at
// most once a second, and says so again when Redis answers. Every Set
// also goes to the fallback, so that it is warm when an outage begins.
type Redis struct {
	client   redis.UniversalClient
	ownsConn bool // the client is this cache's own, closed by Close
	prefix   string
	timeout  time.Duration
	fallback *Memory
	logger   *slog.Logger

	down atomic.Bool // fast path: false while Redis answers

	mu      sync.Mutex
	nextTry time.Time
}

// NewRedis returns a Redis cache that falls back on fallback. It does not
// contact the server: one that is down at start is the same outage as
// one that goes down later. Close closes its connections.
func NewRedis(opts RedisOptions, fallback *Memory, logger *slog.Logger) (*Redis, error) {
	if fallback == nil {
		return nil, errors.New("cache: redis: no fallback cache")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("cache: redis timeout %v is negative", opts.Timeout)
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	client, owns, err := redisconn.Given(opts.Client, opts.URL, opts.Addr, opts.Timeout)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &Redis{
		client:   client,
		ownsConn: owns,
		prefix:   opts.KeyPrefix,
		timeout:  opts.Timeout,
		fallback: fallback,
		logger:   logger,
	}, nil
}

// Close closes the connections to Redis, unless the client was given in
// RedisOptions.Client.
func (r *Redis) Close() error {
	if !r.ownsConn {
		return nil
	}
	return r.client.Close()
}

// Get implements Cache. While Redis answers, it alone is the cache.
func (r *Redis) Get(ctx context.Context, key string) (string, bool) {
	if r.skip() {
		return r.fallback.Get(ctx, key)
	}
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	v, err := r.client.Get(rctx, r.prefix+key).Result()
	cancel()
	switch {
	case err == nil:
		r.succeeded()
		return v, true
	case errors.Is(err, redis.Nil):
		r.succeeded()
		return "", false
	case ctx.Err() != nil:
		return "", false // the caller gave up; Redis is not at fault
	}
	r.failed(err)
	return r.fallback.Get(ctx, key)
}

// Set implements Cache.
func (r *Redis) Set(ctx context.Context, key, value string, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	r.fallback.Set(ctx, key, value, ttl)
	if r.skip() {
		return
	}
	// PX counts milliseconds; less than one would be refused.
	ttl = max(ttl, time.Millisecond)
	rctx, cancel := context.WithTimeout(ctx, r.timeout)
	err := r.client.Set(rctx, r.prefix+key, value, ttl).Err()
	cancel()
	switch {
	case err == nil:
		r.succeeded()
	case ctx.Err() == nil:
		r.failed(err)
	}
}

// skip reports whether Redis is down and not yet due for another try. The
// first caller after the retry interval tries it.
func (r *Redis) skip() bool {
	if !r.down.Load() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Before(r.nextTry) {
		return true
	}
	r.nextTry = now.Add(retryInterval)
	return false
}

func (r *Redis) failed(err error) {
	r.mu.Lock()
	r.nextTry = time.Now().Add(retryInterval)
	r.mu.Unlock()
	if !r.down.Swap(true) {
		r.logger.Warn("cache: redis unreachable, caching on this node", "err", err)
	}
}

func (r *Redis) succeeded() {
	if r.down.Load() && r.down.Swap(false) {
		r.logger.Info("cache: redis reachable again")
	}
}

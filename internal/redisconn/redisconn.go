// Package redisconn builds the fleet's Redis client from its configuration
// ([fleet]): one server, a primary watched by Redis Sentinel, or a Redis
// Cluster. Every user of Redis in a node (the shared counters, the shared
// caches) takes the one client it returns.
//
// The failover is go-redis's own: with Sentinel, each new connection asks
// a Sentinel for the primary's address, and the client drops its
// connections to a primary the Sentinels announce replaced
// (+switch-master); with Cluster, the client follows the cluster's slot
// map and its MOVED replies. What a node does while neither has an answer
// (count on its own, or answer 421) is its users' business: the client
// only makes sure that such a wait is short.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultTimeout bounds each wait on Redis when Options.Timeout is zero.
const DefaultTimeout = 100 * time.Millisecond

// Options says where the fleet's Redis is: exactly one of Redis, Sentinel
// or Cluster. The field names are the [fleet] keys they come from, and the
// errors of New name those keys.
type Options struct {
	// Redis is one server: host:port, or a redis://, rediss:// or unix://
	// URL (see redis.ParseURL), which may carry a password and a database.
	Redis string
	// Sentinel are the host:port of Redis Sentinels watching the primary
	// named MasterName; any one that answers names the primary.
	Sentinel   []string
	MasterName string
	// SentinelPassword is the Sentinels' requirepass; "" for none.
	SentinelPassword string
	// Cluster are the host:port of some nodes of a Redis Cluster; the
	// client learns the others from them.
	Cluster []string
	// Timeout bounds each dial, read, write and wait for a pooled
	// connection; DefaultTimeout when zero.
	Timeout time.Duration
}

// Given is the client a user of Redis (the limiter, a cache) works with:
// c when the caller gives one (shared, so not the user's to close), else
// a new one of the user's own for url or, without one, addr.
func Given(c redis.UniversalClient, url, addr string, timeout time.Duration) (client redis.UniversalClient, owned bool, err error) {
	if c != nil {
		return c, false, nil
	}
	if url == "" {
		url = addr
	}
	if url == "" {
		return nil, false, errors.New("redis: neither Client, URL nor Addr given")
	}
	if c, err = New(Options{Redis: url, Timeout: timeout}); err != nil {
		return nil, false, err
	}
	return c, true, nil
}

// New returns a client for opts. It does not contact Redis: a server that
// is down at start is the same outage as one that goes down later, which
// the client's users handle.
func New(opts Options) (redis.UniversalClient, error) {
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("redis timeout %v is negative", opts.Timeout)
	}
	var set []string
	for _, k := range []struct {
		name string
		set  bool
	}{{"redis", opts.Redis != ""}, {"sentinel", len(opts.Sentinel) > 0}, {"cluster", len(opts.Cluster) > 0}} {
		if k.set {
			set = append(set, k.name)
		}
	}
	switch {
	case len(set) == 0:
		return nil, errors.New("none of redis, sentinel or cluster is set")
	case len(set) > 1:
		return nil, fmt.Errorf("%s are set: set only one of redis, sentinel or cluster", strings.Join(set, " and "))
	case opts.MasterName != "" && len(opts.Sentinel) == 0:
		return nil, errors.New("master_name is set without sentinel")
	case opts.SentinelPassword != "" && len(opts.Sentinel) == 0:
		return nil, errors.New("sentinel_password is set without sentinel")
	}
	b := bounds(opts.Timeout)

	switch {
	case len(opts.Sentinel) > 0:
		if opts.MasterName == "" {
			return nil, errors.New("sentinel is set without master_name: the name the Sentinels monitor the primary under")
		}
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       opts.MasterName,
			SentinelAddrs:    opts.Sentinel,
			SentinelPassword: opts.SentinelPassword,
			// The Sentinels get the same bounds: asking one for the
			// primary is on a connection's path, as a dial is.
			DialTimeout:           b.Timeout,
			ReadTimeout:           b.Timeout,
			WriteTimeout:          b.Timeout,
			PoolTimeout:           b.Timeout,
			ContextTimeoutEnabled: b.ContextTimeoutEnabled,
			MaxRetries:            b.MaxRetries,
			DialerRetries:         b.DialerRetries,
			DisableIdentity:       b.DisableIdentity,
			// go-redis turns maintenance notifications off for
			// FailoverClient itself.
		}), nil

	case len(opts.Cluster) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                    opts.Cluster,
			DialTimeout:              b.Timeout,
			ReadTimeout:              b.Timeout,
			WriteTimeout:             b.Timeout,
			PoolTimeout:              b.Timeout,
			ContextTimeoutEnabled:    b.ContextTimeoutEnabled,
			MaxRetries:               b.MaxRetries,
			DialerRetries:            b.DialerRetries,
			DisableIdentity:          b.DisableIdentity,
			MaintNotificationsConfig: b.MaintNotificationsConfig,
		}), nil
	}

	var ro *redis.Options
	if strings.Contains(opts.Redis, "://") {
		var err error
		if ro, err = redis.ParseURL(opts.Redis); err != nil {
			// go-redis's message, never the URL, which may hold a password.
			return nil, fmt.Errorf("redis URL: %w", err)
		}
	} else {
		ro = &redis.Options{Addr: opts.Redis}
	}
	ro.DialTimeout = b.Timeout
	ro.ReadTimeout = b.Timeout
	ro.WriteTimeout = b.Timeout
	ro.PoolTimeout = b.Timeout
	ro.ContextTimeoutEnabled = b.ContextTimeoutEnabled
	ro.MaxRetries = b.MaxRetries
	ro.DialerRetries = b.DialerRetries
	ro.DisableIdentity = b.DisableIdentity
	ro.MaintNotificationsConfig = b.MaintNotificationsConfig
	return redis.NewClient(ro), nil
}

// limits are what every kind of client is given, whatever its options
// type.
type limits struct {
	// Timeout is every wait's bound: an unreachable Redis must cost a
	// connection a short delay, never a stall.
	Timeout time.Duration
	// ContextTimeoutEnabled makes a caller's deadline cut a wait short.
	ContextTimeoutEnabled bool
	// MaxRetries is 1: a pooled connection may be dead after a restart or
	// a failover, and one retry on a fresh one is cheap; more would
	// multiply the wait of an outage.
	MaxRetries int
	// DialerRetries is 1: go-redis's default, 5 dials 100 ms apart,
	// would spend a call's whole Timeout redialling a primary that has
	// just died, when its users have an answer without it at once.
	DialerRetries int
	// DisableIdentity and MaintNotificationsConfig leave out the
	// handshake extras (CLIENT SETINFO, maintenance notifications) that
	// older servers answer with errors.
	DisableIdentity          bool
	MaintNotificationsConfig *maintnotifications.Config
}

func bounds(timeout time.Duration) limits {
	return limits{
		Timeout:                  timeout,
		ContextTimeoutEnabled:    true,
		MaxRetries:               1,
		DialerRetries:            1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// Logger carries go-redis's own log lines (a dial that failed, the
// primary a Sentinel named) into Log, at debug level: they repeat at every
// retry of an outage, which the client's users log once, and would
// otherwise go to stderr in go-redis's own format, between the server's
// lines. Give it to redis.SetLogger once, at the start of the process:
// go-redis has one logger for all its clients.
type Logger struct{ Log *slog.Logger }

// Printf implements go-redis's logging interface.
func (l Logger) Printf(ctx context.Context, format string, v ...any) {
	l.Log.DebugContext(ctx, "redis: "+strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
}

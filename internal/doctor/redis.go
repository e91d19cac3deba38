package doctor

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/redisconn"
)

const (
	// RedisTimeout bounds the connection and each command of the Redis
	// check.
	RedisTimeout = time.Second
	// redisPings is how many round trips are timed after the first.
	redisPings = 5
)

// Redis checks the Redis of [fleet], when one is set: it connects, says
// PING, redisPings more to time a round trip, and asks INFO for the
// version. With sentinel, the PING goes to the primary the Sentinels
// name; with cluster, to a node of the cluster. A Redis that does not
// answer is a Fail with on_redis_error = "tempfail", since every client
// would then get 421, and a Warn with "local". A round trip over a quarter
// of the limiter's per-call timeout (limit.DefaultTimeout) is a Warn too.
func Redis(ctx context.Context, fleet config.Fleet) []Finding {
	if !fleet.Shared() {
		return []Finding{finding(OK, CheckRedis, "none configured ([fleet] redis, sentinel, cluster): the limits count in this process")}
	}
	var (
		c       redis.UniversalClient
		where   string
		connect string // how long connecting took, when measured
		err     error
	)
	if fleet.Redis != "" {
		c, where, connect, err = dialOne(ctx, fleet.Redis)
		if c == nil && where == "" {
			return []Finding{finding(Fail, CheckRedis, "[fleet] redis: %v", err)}
		}
	} else {
		o := fleet.RedisOptions()
		o.Timeout = RedisTimeout
		if c, err = redisconn.New(o); err != nil {
			return []Finding{finding(Fail, CheckRedis, "[fleet]: %v", err)}
		}
		where = "the cluster of " + strings.Join(o.Cluster, ", ")
		if fleet.Sentinel != "" {
			where = fmt.Sprintf("the primary %q of the Sentinels %s", o.MasterName, strings.Join(o.Sentinel, ", "))
		}
		err = c.Ping(ctx).Err()
	}
	if c != nil {
		defer c.Close()
	}
	if err != nil {
		if fleet.OnRedisError == config.OnRedisErrorTempfail {
			return []Finding{finding(Fail, CheckRedis, "%s does not answer PING: %v; with on_redis_error = \"tempfail\" every client would get 421 while it is away",
				where, err)}
		}
		return []Finding{finding(Warn, CheckRedis, "%s does not answer PING: %v; with on_redis_error = \"local\" each node counts its clients alone while it is away, "+
			"so the limits are per node, not per fleet", where, err)}
	}
	var rtt []time.Duration
	for range redisPings {
		t := time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			return []Finding{finding(Fail, CheckRedis, "%s answered a first PING, then: %v", where, err)}
		}
		rtt = append(rtt, time.Since(t))
	}
	slices.Sort(rtt)
	version := "of an unknown version"
	if info, err := c.Info(ctx, "server").Result(); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
				version = v
			}
		}
	}
	text := fmt.Sprintf("%s answers PING in %s (median of %d%s), redis %s",
		where, ms(percentile(rtt, 50)), len(rtt), connect, version)
	if slow := limit.DefaultTimeout / 4; percentile(rtt, 50) > slow {
		return []Finding{finding(Warn, CheckRedis, "%s; over %s: the limiter gives each call to Redis %s, and a call that runs out counts as Redis away",
			text, ms(slow), ms(limit.DefaultTimeout))}
	}
	return []Finding{finding(OK, CheckRedis, "%s", text)}
}

// dialOne connects to the one server of [fleet] redis, timing a connection
// of its own first, for the figure and because go-redis would log a failed
// dial on stderr, outside the report. where names the server, never by the
// URL, which may hold a password; it is "" when the value is not usable.
func dialOne(ctx context.Context, value string) (c redis.UniversalClient, where, connect string, err error) {
	var opts *redis.Options
	// As the server reads the key (redisconn.New): a URL, or host:port.
	if strings.Contains(value, "://") {
		if opts, err = redis.ParseURL(value); err != nil {
			return nil, "", "", err
		}
	} else {
		opts = &redis.Options{Addr: value}
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = RedisTimeout, RedisTimeout, RedisTimeout, RedisTimeout
	opts.MaxRetries = -1 // each failure as it is
	opts.PoolSize = 1
	opts.DialerRetries = 1
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

	start := time.Now()
	network := opts.Network
	if network == "" {
		network = "tcp"
	}
	nc, err := (&net.Dialer{Timeout: RedisTimeout}).DialContext(ctx, network, opts.Addr)
	if err != nil {
		return nil, opts.Addr, "", err
	}
	nc.Close()
	connect = "; connecting took " + ms(time.Since(start))
	c = redis.NewClient(opts)
	return c, opts.Addr, connect, c.Ping(ctx).Err()
}

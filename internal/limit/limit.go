// Package limit counts connections per client, for sendmail's ratecontrol
// (ClientRate: at most N new connections in a sliding window) and conncontrol
// (ClientConn: at most N connections open at once).
//
// The counters sit behind one interface, Limiter, with two implementations:
// Memory keeps them in this process, which is right for a single node; Redis
// keeps them in a Redis server shared by a fleet of nodes behind one MX
// record, so that a client cannot multiply its allowance by the number of
// nodes. Failover puts Memory behind Redis with a stated policy for when
// Redis cannot be reached.
//
// A Limiter only counts; comparing the count with the client's limit and
// choosing the reply is the caller's business.
package limit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limiter counts connections per client key (usually the client's IP
// address). Implementations are safe for concurrent use.
type Limiter interface {
	// Rate records one new connection from key now and reports how many
	// connections from key fall in the sliding window ending now, this one
	// included, never more than limit+1.
	//
	// Up to ExactRateLimit the count is exact: a log of the last limit+1
	// connection times, which is all a decision needs. Above it the log
	// would cost O(limit) memory per key, and the count is a sliding-window
	// counter's estimate instead (see ExactRateLimit).
	Rate(ctx context.Context, key string, window time.Duration, limit int) (int, error)

	// Acquire records one open connection from key and returns how many
	// are open, this one included. When err is nil, release must be called
	// once when the connection ends.
	Acquire(ctx context.Context, key string) (n int, release func(), err error)
}

// MaxRateLimit is the largest limit Rate accepts; sendmail's ClientRate
// values are in the tens, a network tier's a few times more.
const MaxRateLimit = 1 << 16

// ExactRateLimit is the largest limit Rate counts exactly. Above it Rate
// counts a key's connections in fixed windows of the window's length and
// estimates the sliding window from the current one and the one before,
// weighted by how much of it the sliding window still covers (the
// "sliding window counter" of Cloudflare's and Redis's rate limiters):
// constant memory per key (two counts) instead of limit+1 timestamps, at
// the price of assuming that the previous window's connections were spread
// evenly over it.
//
// Measured (BENCHMARKS.md, "Fleet scale"): at 1,000 a full log costs Redis
// 142.5 KB per key against 177 bytes for the counter. On steady traffic
// the counter's error shrinks as 1/√limit: just above 1,000 it let a client
// at most 3.3 % over its limit in any sliding window (at a limit of 10 it
// would be 20 %); bursts that fall unevenly across the fixed windows got up
// to 27 % over; and twice the limit is a hard bound (each fixed window
// admits at most the limit, and a sliding window overlaps two). Every
// per-client limit sendmail's ClientRate is used with stays exact; high
// limits come from network tiers (the limit times tier_multiplier for each
// step out).
const ExactRateLimit = 1000

// ErrUnavailable is returned (wrapped) when the shared counters cannot be
// reached and the policy is PolicyTempfail.
var ErrUnavailable = errors.New("limit: shared counters unavailable")

func checkRate(window time.Duration, limit int) error {
	if window <= 0 {
		return fmt.Errorf("limit: rate window %v is not positive", window)
	}
	if limit < 0 || limit > MaxRateLimit {
		return fmt.Errorf("limit: rate limit %d is outside [0, %d]", limit, MaxRateLimit)
	}
	return nil
}

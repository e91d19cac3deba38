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
	// included. limit bounds what needs remembering: a key never needs
	// more than limit+1 timestamps, so the result is exact up to limit+1
	// and never more than that.
	Rate(ctx context.Context, key string, window time.Duration, limit int) (int, error)

	// Acquire records one open connection from key and returns how many
	// are open, this one included. When err is nil, release must be called
	// once when the connection ends.
	Acquire(ctx context.Context, key string) (n int, release func(), err error)
}

// MaxRateLimit is the largest limit Rate accepts. It keeps one client's
// log of timestamps small; sendmail's ClientRate values are in the tens.
const MaxRateLimit = 1 << 16

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

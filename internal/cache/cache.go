// Package cache keeps small values by string key for a limited time.
//
// It exists so that answers that are slow to get and safe to reuse for a
// while (a downstream server's verdict on a recipient address) are asked
// for once, not once per SMTP session. There are two implementations
// behind one interface: Memory, in this process, and Redis, shared by
// every node of a fleet so that a recipient verified by one node is known
// to all.
//
// A cache is an optimisation, never a dependency: neither implementation
// returns errors. A value may be missing at any time (evicted, expired,
// or Redis unreachable), and the caller then does the slow thing. Both are
// bounded, so that a flood of distinct keys (a dictionary attack of random
// recipient names) costs a fixed amount of memory, and Redis's waits are
// bounded, so that an unreachable server costs a session a short delay at
// most.
package cache

import (
	"context"
	"time"
)

// Cache is a TTL cache of small values by string key. Implementations are
// safe for concurrent use.
type Cache interface {
	// Get returns the value stored under key, unless it has expired or
	// been evicted.
	Get(ctx context.Context, key string) (value string, ok bool)
	// Set stores value under key for ttl, replacing what was there. A ttl
	// of zero or less stores nothing.
	Set(ctx context.Context, key, value string, ttl time.Duration)
}

package limit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Policy says what Failover does when its primary Limiter fails.
type Policy string

const (
	// PolicyLocal counts with the fallback Limiter instead, and logs the
	// outage once. A fleet then limits per node until Redis returns.
	PolicyLocal Policy = "local"
	// PolicyTempfail returns an error wrapping ErrUnavailable; the caller
	// refuses the connection with a temporary failure.
	PolicyTempfail Policy = "tempfail"
)

// ParsePolicy checks a policy name from the configuration.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case PolicyLocal, PolicyTempfail:
		return p, nil
	}
	return "", fmt.Errorf("limit: unknown policy %q (want %q or %q)", s, PolicyLocal, PolicyTempfail)
}

// retryInterval is how long Failover leaves a failed primary alone before
// trying it again. Meanwhile connections do not wait for its timeout.
const retryInterval = time.Second

// Failover is a Limiter that uses a primary Limiter (Redis) and, when the
// primary fails, applies a Policy.
//
// The fallback (Memory) counts every connection, even while the primary
// works, so that on an outage the local counts are already warm: a client
// does not get a fresh allowance because Redis went away. After a failure
// the primary is tried again at most once per second; other calls in that
// time take the policy's answer at once.
type Failover struct {
	primary, fallback Limiter
	policy            Policy
	logger            *slog.Logger

	down atomic.Bool // fast path: false while the primary works

	onState func(down bool) // told each change of state
	onError func()          // told each failed call to the primary

	mu        sync.Mutex
	lastErr   error
	nextProbe time.Time
}

// NewFailover returns a Failover. An unknown policy is taken as
// PolicyLocal, the documented default; use ParsePolicy to reject it
// earlier.
func NewFailover(primary, fallback Limiter, policy Policy, logger *slog.Logger, opts ...FailoverOption) *Failover {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if policy != PolicyTempfail {
		policy = PolicyLocal
	}
	f := &Failover{
		primary:  primary,
		fallback: fallback,
		policy:   policy,
		logger:   logger,
		onState:  func(bool) {},
		onError:  func() {},
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

// FailoverOption changes a Failover.
type FailoverOption func(*Failover)

// WithHooks has onState told each change between the primary working
// (down false) and not, and onError each failed call to the primary: for
// the metrics of the shared store's state and errors.
func WithHooks(onState func(down bool), onError func()) FailoverOption {
	return func(f *Failover) { f.onState, f.onError = onState, onError }
}

// Rate implements Limiter.
func (f *Failover) Rate(ctx context.Context, key string, window time.Duration, limit int) (int, error) {
	local, err := f.fallback.Rate(ctx, key, window, limit)
	if err != nil {
		// Bad arguments, which the primary would refuse too: not an
		// outage.
		return 0, err
	}
	if err := f.skip(); err != nil {
		return f.rateFallback(local, err)
	}
	n, err := f.primary.Rate(ctx, key, window, limit)
	if err == nil {
		f.succeeded()
		return n, nil
	}
	if ctx.Err() != nil {
		return 0, err // the caller gave up; the primary is not at fault
	}
	f.failed(err)
	return f.rateFallback(local, err)
}

func (f *Failover) rateFallback(local int, perr error) (int, error) {
	if f.policy == PolicyTempfail {
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, perr)
	}
	return local, nil
}

// Acquire implements Limiter. The release function it returns is
// idempotent.
func (f *Failover) Acquire(ctx context.Context, key string) (int, func(), error) {
	local, lrelease, err := f.fallback.Acquire(ctx, key)
	if err != nil {
		return 0, nil, err
	}
	if err := f.skip(); err != nil {
		return f.acquireFallback(local, lrelease, err)
	}
	n, prelease, err := f.primary.Acquire(ctx, key)
	if err == nil {
		f.succeeded()
		return n, once(func() { prelease(); lrelease() }), nil
	}
	if ctx.Err() != nil {
		lrelease()
		return 0, nil, err
	}
	f.failed(err)
	return f.acquireFallback(local, lrelease, err)
}

func (f *Failover) acquireFallback(local int, lrelease func(), perr error) (int, func(), error) {
	if f.policy == PolicyTempfail {
		lrelease()
		return 0, nil, fmt.Errorf("%w: %w", ErrUnavailable, perr)
	}
	return local, once(lrelease), nil
}

// skip returns the last error when the primary is down and not yet due
// for another try. The first caller after the retry interval probes it.
func (f *Failover) skip() error {
	if !f.down.Load() {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if now.Before(f.nextProbe) {
		return f.lastErr
	}
	f.nextProbe = now.Add(retryInterval)
	return nil
}

func (f *Failover) failed(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.nextProbe = time.Now().Add(retryInterval)
	f.mu.Unlock()
	f.onError()
	if !f.down.Swap(true) {
		f.onState(true)
		f.logger.Warn("limit: shared counters unreachable", "policy", string(f.policy), "err", err)
	}
}

func (f *Failover) succeeded() {
	if f.down.Load() && f.down.Swap(false) {
		f.onState(false)
		f.logger.Info("limit: shared counters reachable again")
	}
}

func once(fn func()) func() {
	var done atomic.Bool
	return func() {
		if !done.Swap(true) {
			fn()
		}
	}
}

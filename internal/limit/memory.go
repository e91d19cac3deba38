package limit

import (
	"context"
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

const (
	// numShards spreads keys over this many independently locked maps so
	// that a flood from many clients does not serialise on one mutex.
	numShards = 64

	// sweepPeriod is how long the janitor takes to visit every shard once.
	// A key is forgotten at most this long after it went idle.
	sweepPeriod = 30 * time.Second
)

// Memory is a Limiter that keeps its counters in this process.
//
// Rate keeps, per key, a log of the last limit+1 connection times (a true
// sliding window: a connection counts for exactly one window after it was
// made); above ExactRateLimit, a sliding-window counter instead. Keys with
// no open connection and nothing left in their window are forgotten by a
// janitor that visits one shard at a time, so that a flood from a million
// addresses costs memory only while it lasts.
//
// Rate and Acquire on a key already known do not allocate.
type Memory struct {
	now    func() time.Time
	base   time.Time // timestamps are kept as nanoseconds since base
	seed   maphash.Seed
	shards [numShards]shard

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
	// Keep neighbouring shards' mutexes off one cache line.
	_ [64]byte
}

// entry is one client's state. Its fields are guarded by its shard's mutex.
type entry struct {
	sh *shard

	// log is a ring of connection times, oldest at head, n in use, in
	// non-decreasing order.
	log    []int64
	head   int
	n      int
	window int64 // the last window asked for, to tell when the key is idle

	ctr *counter // for limits above ExactRateLimit; nil until one is asked

	conns   int
	release func() // made once, on the first Acquire, and shared
}

// NewMemory returns a Memory that reads the time from now (time.Now when
// nil). Close stops its janitor.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	m := &Memory{
		now:  now,
		base: now(),
		seed: maphash.MakeSeed(),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].m = make(map[string]*entry)
	}
	go m.janitor()
	return m
}

// Close stops the janitor. The counters keep working without it, but idle
// keys are no longer forgotten.
func (m *Memory) Close() {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
	})
}

// Len reports how many keys are remembered.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Rate implements Limiter.
func (m *Memory) Rate(_ context.Context, key string, window time.Duration, limit int) (int, error) {
	if err := checkRate(window, limit); err != nil {
		return 0, err
	}
	now := m.clock()
	sh := m.shard(key)
	sh.mu.Lock()
	e := sh.get(key)
	var n int
	if limit > ExactRateLimit {
		n = e.count(now, int64(window), limit+1)
	} else {
		n = e.record(now, int64(window), limit+1)
	}
	sh.mu.Unlock()
	return n, nil
}

// Acquire implements Limiter. The release function is shared by all the
// connections of a key, so it must be called exactly once per Acquire; a
// surplus call is absorbed (the count never goes below zero) but undercounts
// the key's other connections.
func (m *Memory) Acquire(_ context.Context, key string) (int, func(), error) {
	sh := m.shard(key)
	sh.mu.Lock()
	e := sh.get(key)
	e.conns++
	n := e.conns
	if e.release == nil {
		e.release = e.releaseOne
	}
	release := e.release
	sh.mu.Unlock()
	return n, release, nil
}

func (e *entry) releaseOne() {
	e.sh.mu.Lock()
	if e.conns > 0 {
		e.conns--
	}
	e.sh.mu.Unlock()
}

func (m *Memory) clock() int64 {
	return int64(m.now().Sub(m.base))
}

func (m *Memory) shard(key string) *shard {
	return &m.shards[maphash.String(m.seed, key)%numShards]
}

// get returns key's entry, creating it if need be. sh.mu must be held.
func (sh *shard) get(key string) *entry {
	e := sh.m[key]
	if e == nil {
		e = &entry{sh: sh}
		// The caller's string may point into a larger buffer (a whole
		// log line, say); do not keep that alive.
		sh.m[strings.Clone(key)] = e
	}
	return e
}

// record appends a connection at now to the log, forgets the ones that left
// the window or exceed keep, and returns how many remain.
func (e *entry) record(now, window int64, keep int) int {
	if e.n > 0 {
		// A clock that steps back must not break the log's order.
		now = max(now, e.newest())
	}
	e.window = window
	e.expire(now - window)
	if len(e.log) < keep {
		e.grow(keep)
	}
	for e.n >= keep {
		e.dropOldest()
	}
	i := e.head + e.n
	if i >= len(e.log) {
		i -= len(e.log)
	}
	e.log[i] = now
	e.n++
	return e.n
}

// counter is a sliding-window counter: the connections in fixed window
// number win (of length window) and in the one before it. last is the
// newest time counted.
type counter struct {
	window, win, last int64
	cur, prev         int64
}

// count adds a connection at now to the sliding-window counter and returns
// its estimate of the connections in the window ending now, at most keep.
func (e *entry) count(now, window int64, keep int) int {
	c := e.ctr
	if c == nil {
		// Apart from the entry: most keys never need it.
		c = &counter{}
		e.ctr = c
	}
	if c.window != window {
		// A new counter, or a window changed by a reload: start afresh.
		*c = counter{window: window, win: floorDiv(now, window), last: now}
	}
	// A clock that steps back stays in the newest window counted.
	now = max(now, c.last)
	c.last = now
	switch w := floorDiv(now, window); {
	case w == c.win+1:
		c.prev, c.cur = c.cur, 0
	case w > c.win+1:
		c.prev, c.cur = 0, 0
	}
	c.win = floorDiv(now, window)
	c.cur++
	return windowEstimate(c.cur, c.prev, now-c.win*window, window, keep)
}

// idle reports whether the counter's connections no longer weigh: the
// current window's weigh until the next one ends.
func (c *counter) idle(now int64) bool {
	return now >= (c.win+2)*c.window
}

// windowEstimate is the sliding-window counter's count: the current fixed
// window's connections plus the previous one's in the proportion of it that
// the sliding window still covers (elapsed is the time since the current
// fixed window began), rounded down, at most keep. The Redis script
// computes the same.
func windowEstimate(cur, prev, elapsed, window int64, keep int) int {
	n := cur + int64(float64(prev)*float64(window-elapsed)/float64(window))
	return int(min(n, int64(keep)))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// expire forgets the connections made at or before cutoff.
func (e *entry) expire(cutoff int64) {
	for e.n > 0 && e.log[e.head] <= cutoff {
		e.dropOldest()
	}
}

func (e *entry) dropOldest() {
	e.head++
	if e.head == len(e.log) {
		e.head = 0
	}
	e.n--
}

func (e *entry) newest() int64 {
	i := e.head + e.n - 1
	if i >= len(e.log) {
		i -= len(e.log)
	}
	return e.log[i]
}

// grow makes room for size timestamps, keeping the ones in use in order.
// The log only ever grows: a key's limit rarely changes, and then it is
// cheaper to keep a slightly large ring than to reallocate back and forth.
func (e *entry) grow(size int) {
	log := make([]int64, size)
	for i := range e.n {
		j := e.head + i
		if j >= len(e.log) {
			j -= len(e.log)
		}
		log[i] = e.log[j]
	}
	e.log, e.head = log, 0
}

// idle reports whether forgetting e changes no answer: no connection is
// open, none is left in its log's window, and its counter's windows are
// over (the current one's connections weigh until the next one ends).
func (e *entry) idle(now int64) bool {
	return e.conns == 0 && (e.n == 0 || e.newest() <= now-e.window) &&
		(e.ctr == nil || e.ctr.idle(now))
}

func (m *Memory) janitor() {
	defer close(m.done)
	t := time.NewTicker(sweepPeriod / numShards)
	defer t.Stop()
	for i := 0; ; i = (i + 1) % numShards {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep(&m.shards[i])
		}
	}
}

// sweep forgets the idle keys of one shard. Holding one shard's lock at a
// time bounds the pause that other connections see.
func (m *Memory) sweep(sh *shard) {
	now := m.clock()
	sh.mu.Lock()
	for k, e := range sh.m {
		if e.idle(now) {
			delete(sh.m, k)
		}
	}
	sh.mu.Unlock()
}

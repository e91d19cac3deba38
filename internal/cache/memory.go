package cache

import (
	"context"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Memory is a Cache in this process, holding at most a fixed number of
// keys. When it is full, storing a new key evicts the least recently used
// one, so that a flood of keys that are never asked for again pushes out
// only the coldest entries. Every operation is O(1); Get does not
// allocate.
//
// Expired entries are not swept: one is dropped when it is next looked up,
// or evicted in its turn, which the size bound makes enough.
type Memory struct {
	lru *lru.Cache[string, entry]
	now func() time.Time
}

type entry struct {
	value   string
	expires time.Time
}

// NewMemory returns a Memory holding at most size keys, which must be
// positive. now is the clock for expiry; time.Now when nil (tests set it).
func NewMemory(size int, now func() time.Time) (*Memory, error) {
	if size < 1 {
		return nil, fmt.Errorf("cache: size %d, want at least 1", size)
	}
	if now == nil {
		now = time.Now
	}
	c, err := lru.New[string, entry](size)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &Memory{lru: c, now: now}, nil
}

// Get implements Cache.
func (m *Memory) Get(_ context.Context, key string) (string, bool) {
	e, ok := m.lru.Get(key)
	if !ok {
		return "", false
	}
	if !m.now().Before(e.expires) {
		// A Set racing with this may be lost: a miss the caller can take.
		m.lru.Remove(key)
		return "", false
	}
	return e.value, true
}

// Set implements Cache.
func (m *Memory) Set(_ context.Context, key, value string, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	m.lru.Add(key, entry{value: value, expires: m.now().Add(ttl)})
}

// Len returns the number of keys held, expired ones included.
func (m *Memory) Len() int { return m.lru.Len() }

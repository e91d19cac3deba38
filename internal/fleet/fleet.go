// Package fleet shares the decisions of one node with every node of a
// fleet through Redis: the networks the operator trusts or denies, and the
// bans (an operator's, or a client's score's). A botnet that one node has
// identified must not walk into the next.
//
// Each kind is one Redis hash, field the network, value the entry as JSON;
// a ban's hits are a second hash of counters, so that nodes add to them
// without reading. A change is written and announced on one pub/sub
// channel in the same round trip; every node applies the announcements of
// the others as they come, well under a second. Pub/sub delivers at most
// once, so a node also reads the whole state (a resync) each time its
// subscription is (re)established and every ResyncInterval: a node that
// was down or cut off catches up on return. Redis keeps no history, so the
// state is the union of what was added, less what was removed while the
// node listened or before its last resync.
//
// The keys are one per kind (not per client): a Redis Cluster keeps each
// on one shard, which is right for lists an operator reads whole.
package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/reason"
)

// Kind is what an entry decides.
type Kind string

// The kinds of decision shared.
const (
	Trust Kind = "trust" // exempt from limits and screening; wins over a ban
	Deny  Kind = "deny"  // refused at connect, for good
	Ban   Kind = "ban"   // refused at connect until Expires
)

// Kinds lists the kinds, in the order a resync reads them.
var kinds = [...]Kind{Trust, Deny, Ban}

// Entry is one shared decision.
type Entry struct {
	Kind    Kind          `json:"kind"`
	Prefix  netip.Prefix  `json:"prefix"`
	Reason  reason.Reason `json:"reason,omitempty"`
	By      string        `json:"by"`   // what set it: "score", "control", "console"
	Node    string        `json:"node"` // the node that set it
	Created time.Time     `json:"created"`
	Expires time.Time     `json:"expires,omitzero"` // bans only
	Hits    int64         `json:"hits,omitempty"`   // bans: connections refused, fleet-wide (read only)
}

// expired reports whether e is a ban past its expiry at now.
func (e Entry) expired(now time.Time) bool {
	return e.Kind == Ban && !now.Before(e.Expires)
}

// State is the fleet's entries, as read whole.
type State struct {
	Entries []Entry // by kind, then by network
}

// Of returns the entries of kind k.
func (s State) Of(k Kind) []Entry {
	var out []Entry
	for _, e := range s.Entries {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// Handler applies what the other nodes decide. Its methods are called
// from one goroutine, in order.
type Handler interface {
	// Added: another node added e.
	Added(e Entry)
	// Removed: another node removed the entries of kind k within p.
	Removed(k Kind, p netip.Prefix)
	// Resync: the whole state, after each (re)subscription and every
	// ResyncInterval. The handler reconciles its own copy with it, and
	// may call Add for what it holds that the fleet lacks.
	Resync(s State)
	// Shared: the state of the connection to Redis changed; false while
	// this node's decisions do not reach the fleet.
	Shared(up bool)
}

// Options configures a Store.
type Options struct {
	Client    redis.UniversalClient
	KeyPrefix string // the fleet's key prefix ("mxguard:")
	Node      string // this node's name, in the entries it writes
	// Timeout bounds each call to Redis made on behalf of a command; a
	// resync gets twice that.
	Timeout time.Duration
	// ResyncInterval is how often the whole state is read even when the
	// subscription is healthy (pub/sub loses messages on a reconnect that
	// the client library hides); DefaultResyncInterval when zero.
	ResyncInterval time.Duration
	Logger         *slog.Logger
	Now            func() time.Time
}

// Defaults for Options.
const (
	DefaultTimeout        = 500 * time.Millisecond
	DefaultResyncInterval = 30 * time.Second
	// checkInterval is how often a node checks that Redis answers, to
	// notice an outage (and the return) within about a second even when
	// nothing happens.
	checkInterval = time.Second
)

// Store reads and writes the fleet's decisions. It is safe for concurrent
// use.
type Store struct {
	client   redis.UniversalClient
	prefix   string
	node     string
	instance string // node plus a per-process suffix: skips its own announcements
	timeout  time.Duration
	resync   time.Duration
	log      *slog.Logger
	now      func() time.Time

	hitsMu sync.Mutex
	hits   map[netip.Prefix]int64 // not yet added to the fleet's counters
}

// New returns a Store; Run listens to the fleet.
func New(o Options) (*Store, error) {
	if o.Client == nil {
		return nil, errors.New("fleet: no Redis client")
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "mxguard:"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = DefaultResyncInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Store{
		client:   o.Client,
		prefix:   o.KeyPrefix,
		node:     o.Node,
		instance: o.Node + "/" + strconv.FormatInt(time.Now().UnixNano(), 36),
		timeout:  o.Timeout,
		resync:   o.ResyncInterval,
		log:      o.Logger,
		now:      o.Now,
		hits:     make(map[netip.Prefix]int64),
	}, nil
}

// Node is this node's name, as written in its entries.
func (s *Store) Node() string { return s.node }

func (s *Store) key(k Kind) string { return s.prefix + "fleet:" + string(k) }
func (s *Store) hitsKey() string   { return s.prefix + "fleet:ban:hits" }
func (s *Store) channel() string   { return s.prefix + "fleet:events" }

// event is one announcement on the channel.
type event struct {
	Op     string       `json:"op"` // "add" or "del"
	Entry  Entry        `json:"entry"`
	From   string       `json:"from"` // the instance that made it
	Kind   Kind         `json:"kind,omitempty"`
	Within netip.Prefix `json:"within,omitzero"` // del: the entries of Kind within it
}

// stored is e as this node writes it, and its JSON: the network masked,
// Node and Created filled in when empty, no hits (they are counted apart).
func (s *Store) stored(e Entry) (Entry, []byte, error) {
	e.Prefix = e.Prefix.Masked()
	if e.Node == "" {
		e.Node = s.node
	}
	if e.Created.IsZero() {
		e.Created = s.now()
	}
	e.Hits = 0
	v, err := json.Marshal(e)
	return e, v, err
}

// Add writes e and announces it to the other nodes. An entry already on
// e's network is replaced. Node and Created are filled in when empty.
func (s *Store) Add(ctx context.Context, e Entry) error {
	e, v, err := s.stored(e)
	if err != nil {
		return err
	}
	ev, err := json.Marshal(event{Op: "add", Entry: e, From: s.instance})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pipe := s.client.Pipeline()
	pipe.HSet(ctx, s.key(e.Kind), e.Prefix.String(), v)
	if e.Kind == Ban {
		pipe.HDel(ctx, s.hitsKey(), e.Prefix.String()) // a new ban counts afresh
	}
	pipe.Publish(ctx, s.channel(), ev)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("fleet: adding %s %s: %w", e.Kind, e.Prefix, err)
	}
	return nil
}

// AddAll writes many entries in one pipeline (what a node decided while
// Redis was away, found at a resync) and announces them with one "sync",
// which has every other node read the whole state once, instead of
// applying (and, for trust and deny, reloading its policy for) each.
func (s *Store) AddAll(ctx context.Context, es []Entry) error {
	if len(es) == 0 {
		return nil
	}
	ev, err := json.Marshal(event{Op: "sync", From: s.instance})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
	defer cancel()
	pipe := s.client.Pipeline()
	for _, e := range es {
		e, v, err := s.stored(e)
		if err != nil {
			return err
		}
		pipe.HSet(ctx, s.key(e.Kind), e.Prefix.String(), v)
	}
	pipe.Publish(ctx, s.channel(), ev)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("fleet: adding %d entries: %w", len(es), err)
	}
	return nil
}

// Remove deletes the entries of kind k within p and announces it, and
// returns how many there were.
func (s *Store) Remove(ctx context.Context, k Kind, p netip.Prefix) (int, error) {
	p = p.Masked()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	fields, err := s.client.HKeys(ctx, s.key(k)).Result()
	if err != nil {
		return 0, fmt.Errorf("fleet: removing %s %s: %w", k, p, err)
	}
	var del []string
	for _, f := range fields {
		if q, err := netip.ParsePrefix(f); err == nil && within(q, p) {
			del = append(del, f)
		}
	}
	ev, err := json.Marshal(event{Op: "del", From: s.instance, Kind: k, Within: p})
	if err != nil {
		return 0, err
	}
	pipe := s.client.Pipeline()
	if len(del) > 0 {
		pipe.HDel(ctx, s.key(k), del...)
		if k == Ban {
			pipe.HDel(ctx, s.hitsKey(), del...)
		}
	}
	pipe.Publish(ctx, s.channel(), ev)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("fleet: removing %s %s: %w", k, p, err)
	}
	return len(del), nil
}

// within reports whether q lies inside p.
func within(q, p netip.Prefix) bool {
	return p.Bits() <= q.Bits() && p.Overlaps(q)
}

// Within reports whether network q lies inside p (the rule Remove and
// Handler.Removed use).
func Within(q, p netip.Prefix) bool { return within(q.Masked(), p.Masked()) }

// Hit counts one connection refused by the ban on p, for the fleet's
// count; the counts go to Redis with the next check, about once a second.
func (s *Store) Hit(p netip.Prefix) {
	s.hitsMu.Lock()
	s.hits[p]++
	s.hitsMu.Unlock()
}

// dropExpired deletes a ban field only if it still holds the expired
// value read, so that a ban set again meanwhile survives.
var dropExpired = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
	redis.call('HDEL', KEYS[1], ARGV[1])
	redis.call('HDEL', KEYS[2], ARGV[1])
	return 1
end
return 0
`)

// Read returns the fleet's entries now, with the bans' hits; expired bans
// are left out (and deleted). Fields that do not parse are skipped and
// logged: another version of mxguard, or a hand edit.
func (s *Store) Read(ctx context.Context) (State, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.timeout)
	defer cancel()
	pipe := s.client.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(kinds))
	for i, k := range kinds {
		cmds[i] = pipe.HGetAll(ctx, s.key(k))
	}
	hitsCmd := pipe.HGetAll(ctx, s.hitsKey())
	if _, err := pipe.Exec(ctx); err != nil {
		return State{}, fmt.Errorf("fleet: reading the shared decisions: %w", err)
	}
	hits := hitsCmd.Val()
	now := s.now()
	var st State
	for i, k := range kinds {
		for field, v := range cmds[i].Val() {
			var e Entry
			if err := json.Unmarshal([]byte(v), &e); err != nil || e.Kind != k || !e.Prefix.IsValid() || e.Prefix.String() != field {
				s.log.Warn("fleet: skipping an entry that does not parse", "key", s.key(k), "field", field)
				continue
			}
			if e.expired(now) {
				// Best effort: the next reader tries again.
				_ = dropExpired.Run(ctx, s.client, []string{s.key(k), s.hitsKey()}, field, v).Err()
				continue
			}
			if k == Ban {
				e.Hits, _ = strconv.ParseInt(hits[field], 10, 64)
			}
			st.Entries = append(st.Entries, e)
		}
	}
	slices.SortFunc(st.Entries, func(a, b Entry) int {
		if a.Kind != b.Kind {
			return slices.Index(kinds[:], a.Kind) - slices.Index(kinds[:], b.Kind)
		}
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	return st, nil
}

// flushHits adds the counted hits to the fleet's counters, or pings when
// there are none: either way it tells whether Redis answers.
func (s *Store) flushHits(ctx context.Context) error {
	s.hitsMu.Lock()
	hits := s.hits
	s.hits = make(map[netip.Prefix]int64)
	s.hitsMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if len(hits) == 0 {
		return s.client.Ping(ctx).Err()
	}
	pipe := s.client.Pipeline()
	for p, n := range hits {
		pipe.HIncrBy(ctx, s.hitsKey(), p.String(), n)
	}
	_, err := pipe.Exec(ctx)
	if err != nil {
		// Put them back for the next try; a count is not worth more.
		s.hitsMu.Lock()
		for p, n := range hits {
			s.hits[p] += n
		}
		s.hitsMu.Unlock()
	}
	return err
}

// Run listens to the fleet until ctx ends, calling h for what the other
// nodes decide and for each resync; first calls it synchronously, so that
// a node starting up has the fleet's bans before it serves (ready is
// closed then, or after the first failure: an unreachable Redis must not
// hold up the start).
func (s *Store) Run(ctx context.Context, h Handler, ready chan<- struct{}) {
	ps := s.client.Subscribe(ctx, s.channel())
	defer ps.Close()
	msgs := ps.ChannelWithSubscriptions(
		redis.WithChannelHealthCheckInterval(checkInterval),
		redis.WithChannelPingTimeout(checkInterval),
		redis.WithChannelReconnectTimeout(checkInterval),
	)
	check := time.NewTicker(checkInterval)
	defer check.Stop()
	up := true // as the Handler was last told; it starts believing in Redis
	var lastSync time.Time
	needSync := true // the subscription's confirmation asks for one too
	readyOnce := sync.OnceFunc(func() {
		if ready != nil {
			close(ready)
		}
	})
	defer readyOnce()
	setUp := func(now bool, err error) {
		if now == up {
			return
		}
		up = now
		if now {
			s.log.Info("fleet: shared decisions reachable again, resynchronised")
		} else {
			s.log.Warn("fleet: shared decisions unreachable; this node keeps its own copy until Redis returns", "err", err)
		}
		h.Shared(now)
	}
	resync := func() {
		st, err := s.Read(ctx)
		if err != nil {
			if ctx.Err() == nil {
				setUp(false, err)
			}
			needSync = true
			return
		}
		needSync = false
		lastSync = time.Now()
		h.Resync(st)
		setUp(true, nil)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					resync() // after each (re)subscription: what was missed
					readyOnce()
				}
			case *redis.Message:
				if s.apply(m.Payload, h) {
					resync()
				}
			}
		case <-check.C:
			err := s.flushHits(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				setUp(false, err)
				needSync = true
				readyOnce()
			case err == nil && (needSync || time.Since(lastSync) >= s.resync):
				resync()
			}
		}
	}
}

// apply hands one announcement to h, unless this node made it.
func (s *Store) apply(payload string, h Handler) (resync bool) {
	var ev event
	if err := json.Unmarshal([]byte(payload), &ev); err != nil {
		s.log.Warn("fleet: skipping an announcement that does not parse", "channel", s.channel())
		return false
	}
	if ev.From == s.instance {
		return false
	}
	switch ev.Op {
	case "sync":
		return true
	case "add":
		if ev.Entry.Prefix.IsValid() && slices.Contains(kinds[:], ev.Entry.Kind) && !ev.Entry.expired(s.now()) {
			h.Added(ev.Entry)
		}
	case "del":
		if ev.Within.IsValid() && slices.Contains(kinds[:], ev.Kind) {
			h.Removed(ev.Kind, ev.Within)
		}
	}
	return false
}

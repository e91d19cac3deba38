package fleet

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/redistest"
)

// recorder is a Handler that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	added   []Entry
	removed []string
	resyncs []State
	shared  []bool
}

func (r *recorder) Added(e Entry) { r.mu.Lock(); r.added = append(r.added, e); r.mu.Unlock() }
func (r *recorder) Removed(k Kind, p netip.Prefix) {
	r.mu.Lock()
	r.removed = append(r.removed, string(k)+" "+p.String())
	r.mu.Unlock()
}
func (r *recorder) Resync(s State) { r.mu.Lock(); r.resyncs = append(r.resyncs, s); r.mu.Unlock() }
func (r *recorder) Shared(up bool) { r.mu.Lock(); r.shared = append(r.shared, up); r.mu.Unlock() }

// wait polls cond for up to d: a bounded loop.
func wait(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("after %v: %s", d, what)
	return 0
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newStore(t *testing.T, addr, node string, log *syncBuf, now func() time.Time) *Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: 1})
	t.Cleanup(func() { c.Close() })
	o := Options{Client: c, Node: node, Timeout: 500 * time.Millisecond, Now: now}
	if log != nil {
		o.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run starts s listening for h, and waits until it has synchronised.
func run(t *testing.T, s *Store, h Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() { defer close(done); s.Run(ctx, h, ready) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("Run never became ready")
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestAddReadRemove(t *testing.T) {
	addr := redistest.Start(t)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	s := newStore(t, addr, "mx1", nil, func() time.Time { return now })
	ctx := context.Background()
	for _, e := range []Entry{
		{Kind: Deny, Prefix: pfx("192.0.2.0/24"), By: "control"},
		{Kind: Trust, Prefix: pfx("198.51.100.7/32"), By: "control"},
		{Kind: Ban, Prefix: pfx("203.0.113.5/32"), By: "score", Reason: reason.Pregreet, Expires: now.Add(time.Hour)},
		{Kind: Ban, Prefix: pfx("203.0.113.6/32"), By: "score", Reason: reason.Pregreet, Expires: now.Add(time.Minute)},
		{Kind: Ban, Prefix: pfx("2001:db8::/64"), By: "console", Expires: now.Add(time.Hour)},
		{Kind: Deny, Prefix: pfx("192.0.2.77/24"), By: "control"}, // the same network: replaces
	} {
		if err := s.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	s.Hit(pfx("203.0.113.5/32"))
	s.Hit(pfx("203.0.113.5/32"))
	if err := s.flushHits(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range st.Entries {
		got = append(got, string(e.Kind)+" "+e.Prefix.String()+" "+e.Node+" "+e.By)
		if !e.Created.Equal(now) {
			t.Errorf("%v: created %v, want %v", e.Prefix, e.Created, now)
		}
		if e.Prefix == pfx("203.0.113.5/32") && e.Hits != 2 {
			t.Errorf("hits of %v = %d, want 2", e.Prefix, e.Hits)
		}
	}
	want := []string{
		"trust 198.51.100.7/32 mx1 control",
		"deny 192.0.2.0/24 mx1 control",
		"ban 203.0.113.5/32 mx1 score",
		"ban 203.0.113.6/32 mx1 score",
		"ban 2001:db8::/64 mx1 console",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("read:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Two minutes on, the short ban has expired: not read, and deleted.
	now = now.Add(2 * time.Minute)
	st, err = s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(st.Of(Ban)); n != 2 {
		t.Errorf("bans after expiry: %d, want 2: %+v", n, st.Of(Ban))
	}
	if ok, _ := s.client.HExists(ctx, s.key(Ban), "203.0.113.6/32").Result(); ok {
		t.Error("the expired ban is still in Redis")
	}

	// Removing a /16 takes the /32 ban inside it, not the IPv6 one.
	n, err := s.Remove(ctx, Ban, pfx("203.0.0.0/16"))
	if err != nil || n != 1 {
		t.Fatalf("Remove = %d, %v; want 1", n, err)
	}
	st, _ = s.Read(ctx)
	if bans := st.Of(Ban); len(bans) != 1 || bans[0].Prefix != pfx("2001:db8::/64") {
		t.Errorf("bans after remove: %+v", bans)
	}
	if ok, _ := s.client.HExists(ctx, s.hitsKey(), "203.0.113.5/32").Result(); ok {
		t.Error("the removed ban's hits are still in Redis")
	}
}

func TestReadSkipsBadEntries(t *testing.T) {
	addr := redistest.Start(t)
	log := &syncBuf{}
	s := newStore(t, addr, "mx1", log, nil)
	ctx := context.Background()
	s.client.HSet(ctx, s.key(Deny), "192.0.2.0/24", "{not json")
	s.client.HSet(ctx, s.key(Deny), "10.0.0.0/8", `{"kind":"trust","prefix":"10.0.0.0/8"}`)  // wrong kind
	s.client.HSet(ctx, s.key(Deny), "10.1.0.0/16", `{"kind":"deny","prefix":"10.2.0.0/16"}`) // wrong field
	if err := s.Add(ctx, Entry{Kind: Deny, Prefix: pfx("198.51.100.0/24")}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Entries) != 1 || st.Entries[0].Prefix != pfx("198.51.100.0/24") {
		t.Errorf("entries: %+v", st.Entries)
	}
	if n := strings.Count(log.String(), "does not parse"); n != 3 {
		t.Errorf("%d log lines about bad entries, want 3:\n%s", n, log)
	}
}

// TestAnnouncements: what one node adds or removes reaches another within
// a second, and a node is not told its own.
func TestAnnouncements(t *testing.T) {
	addr := redistest.Start(t)
	a := newStore(t, addr, "mx1", nil, nil)
	b := newStore(t, addr, "mx2", nil, nil)
	ra, rb := &recorder{}, &recorder{}
	run(t, a, ra)
	run(t, b, rb)
	ctx := context.Background()
	if err := a.Add(ctx, Entry{Kind: Deny, Prefix: pfx("192.0.2.0/24"), By: "control"}); err != nil {
		t.Fatal(err)
	}
	took := wait(t, time.Second, "mx2 never heard of the deny", func() bool {
		rb.mu.Lock()
		defer rb.mu.Unlock()
		return len(rb.added) == 1
	})
	t.Logf("deny reached the other node in %v", took)
	rb.mu.Lock()
	if e := rb.added[0]; e.Kind != Deny || e.Prefix != pfx("192.0.2.0/24") || e.Node != "mx1" || e.By != "control" {
		t.Errorf("mx2 got %+v", e)
	}
	rb.mu.Unlock()
	if _, err := a.Remove(ctx, Ban, pfx("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	wait(t, time.Second, "mx2 never heard of the removal", func() bool {
		rb.mu.Lock()
		defer rb.mu.Unlock()
		return len(rb.removed) == 1 && rb.removed[0] == "ban 192.0.2.0/24"
	})
	// Expired bans are not announced as news.
	if err := a.Add(ctx, Entry{Kind: Ban, Prefix: pfx("203.0.113.1/32"), Expires: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(ctx, Entry{Kind: Trust, Prefix: pfx("203.0.113.2/32")}); err != nil {
		t.Fatal(err)
	}
	wait(t, time.Second, "mx2 never heard of the trust", func() bool {
		rb.mu.Lock()
		defer rb.mu.Unlock()
		return len(rb.added) == 2
	})
	rb.mu.Lock()
	if e := rb.added[1]; e.Kind != Trust {
		t.Errorf("mx2 was told of %+v, want the trust (the expired ban is no news)", e)
	}
	rb.mu.Unlock()
	ra.mu.Lock()
	defer ra.mu.Unlock()
	if len(ra.added) != 0 || len(ra.removed) != 0 {
		t.Errorf("mx1 was told of its own changes: %+v %v", ra.added, ra.removed)
	}
}

// TestResyncAfterOutage: a node whose Redis went away says so once, and
// when Redis returns (empty, as after a crash) it resynchronises by itself
// and says that once; what was written meanwhile by others reaches it
// through the resync even though it missed the announcement.
func TestResyncAfterOutage(t *testing.T) {
	srv := redistest.StartServer(t)
	log := &syncBuf{}
	a := newStore(t, srv.Addr, "mx1", log, nil)
	ra := &recorder{}
	run(t, a, ra)
	ra.mu.Lock()
	if len(ra.resyncs) != 1 {
		t.Errorf("%d resyncs at start, want 1", len(ra.resyncs))
	}
	ra.mu.Unlock()

	srv.Stop()
	wait(t, 5*time.Second, "the outage was never noticed", func() bool {
		ra.mu.Lock()
		defer ra.mu.Unlock()
		return len(ra.shared) == 1 && !ra.shared[0]
	})
	srv.Restart()
	// Another node writes before mx1 has resubscribed: mx1 misses the
	// announcement, and must get the entry from the resync.
	b := newStore(t, srv.Addr, "mx2", nil, nil)
	if err := b.Add(context.Background(), Entry{Kind: Deny, Prefix: pfx("192.0.2.0/24")}); err != nil {
		t.Fatal(err)
	}
	took := wait(t, 10*time.Second, "mx1 never came back", func() bool {
		ra.mu.Lock()
		defer ra.mu.Unlock()
		if len(ra.shared) != 2 || !ra.shared[1] {
			return false
		}
		for _, st := range ra.resyncs {
			if len(st.Of(Deny)) == 1 {
				return true
			}
		}
		for _, e := range ra.added {
			if e.Kind == Deny {
				return true
			}
		}
		return false
	})
	t.Logf("back in shared mode %v after the restart", took)
	out := log.String()
	if n := strings.Count(out, "shared decisions unreachable"); n != 1 {
		t.Errorf("%d lines for the outage, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "reachable again"); n != 1 {
		t.Errorf("%d lines for the return, want 1:\n%s", n, out)
	}
}

func TestNewNeedsClient(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without a client: no error")
	}
}

// TestAddAll: many entries go in one round trip and one announcement,
// which has the other nodes read the whole state once rather than be told
// of each.
func TestAddAll(t *testing.T) {
	addr := redistest.Start(t)
	a := newStore(t, addr, "mx1", nil, nil)
	b := newStore(t, addr, "mx2", nil, nil)
	rb := &recorder{}
	run(t, b, rb)
	var es []Entry
	for i := range 500 {
		es = append(es, Entry{Kind: Deny, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 32), By: "file"})
	}
	if err := a.AddAll(context.Background(), es); err != nil {
		t.Fatal(err)
	}
	wait(t, time.Second, "mx2 never resynchronised", func() bool {
		rb.mu.Lock()
		defer rb.mu.Unlock()
		return len(rb.resyncs) == 2 && len(rb.resyncs[1].Of(Deny)) == 500
	})
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if len(rb.added) != 0 {
		t.Errorf("mx2 was told of %d entries one by one, want none (one resync)", len(rb.added))
	}
	if e := rb.resyncs[1].Of(Deny)[0]; e.Node != "mx1" || e.Created.IsZero() {
		t.Errorf("entry as read: %+v", e)
	}
}

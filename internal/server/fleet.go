package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/fleet"
	"github.com/mxguard/mxguard/internal/reputation"
)

// fleetReadyWait is how long a starting node waits for the fleet's
// decisions before it serves without them (they follow when Redis
// answers).
const fleetReadyWait = 2 * time.Second

// newFleet makes the store of shared decisions of [fleet] redis, or none.
func newFleet(cfg *config.Config, client redis.UniversalClient, logger *slog.Logger) (*fleet.Store, error) {
	if client == nil {
		return nil, nil
	}
	return fleet.New(fleet.Options{
		Client:    client,
		KeyPrefix: cfg.Fleet.KeyPrefix,
		Node:      cfg.Hostname,
		Logger:    logger,
	})
}

// fleetSync keeps this node's copy of the fleet's decisions: the trust
// and deny files (the persistent copy, and what the policy is made of)
// and the score book's bans. It is the fleet.Handler of the server.
type fleetSync struct {
	s *Server

	down atomic.Bool // the fleet is unreachable: this node decides alone

	mu     sync.Mutex
	shared map[netip.Prefix]bool // bans the fleet has had: absent from it now means lifted
}

func (f *fleetSync) Added(e fleet.Entry) {
	s := f.s
	switch e.Kind {
	case fleet.Trust, fleet.Deny:
		trust := e.Kind == fleet.Trust
		n, err := s.applyPrefixes([]fleet.Entry{e}, trust)
		if err != nil {
			s.log.Error("fleet: cannot apply "+string(e.Kind)+" "+e.Prefix.String(), "err", err.Error())
			return
		}
		if n > 0 {
			s.log.Info(fmt.Sprintf("fleet: %s %s, set by %s on %s", e.Kind, e.Prefix, e.By, e.Node))
		}
		if trust && s.rep != nil {
			s.rep.Lift(e.Prefix) // trust wins
		}
	case fleet.Ban:
		if s.rep == nil {
			return
		}
		f.mu.Lock()
		f.shared[e.Prefix] = true
		f.mu.Unlock()
		s.rep.Add(banOf(e))
		s.log.Info(fmt.Sprintf("fleet: ban on %s until %s, set by %s on %s (%s)",
			e.Prefix, e.Expires.UTC().Format(time.RFC3339), e.By, e.Node, e.Reason))
	}
}

func (f *fleetSync) Removed(k fleet.Kind, p netip.Prefix) {
	s := f.s
	if k != fleet.Ban {
		// No command removes a trusted or denied network: an operator
		// edits the files, and the fleet's hash, by hand.
		return
	}
	f.mu.Lock()
	for q := range f.shared {
		if fleet.Within(q, p) {
			delete(f.shared, q)
		}
	}
	f.mu.Unlock()
	if s.rep != nil {
		if n := s.rep.Lift(p); n > 0 {
			s.log.Info(fmt.Sprintf("fleet: %d bans in %s lifted", n, p))
		}
	}
}

// Resync reconciles this node with the whole fleet: what the fleet has
// and this node lacks is taken; what this node decided while Redis was
// away (in its files, or bans it made) is sent; a ban the fleet had and
// no longer has was lifted (or expired) elsewhere, and is dropped here.
func (f *fleetSync) Resync(st fleet.State) {
	s := f.s
	cfg := s.cfg.Load()
	var send []fleet.Entry // what this node has and the fleet lacks
	defer func() { f.send(send) }()
	for _, k := range []fleet.Kind{fleet.Trust, fleet.Deny} {
		trust := k == fleet.Trust
		theirs := map[netip.Prefix]bool{}
		for _, e := range st.Of(k) {
			theirs[e.Prefix] = true
		}
		if n, err := s.applyPrefixes(st.Of(k), trust); err != nil {
			s.log.Error("fleet: cannot apply the fleet's "+string(k)+" list", "err", err.Error())
		} else if n > 0 {
			s.log.Info(fmt.Sprintf("fleet: %d %s networks taken from the fleet", n, k))
		}
		file := cfg.DenyFile
		if trust {
			file = cfg.TrustFile
		}
		mine, err := readPrefixFile(file)
		if err != nil {
			continue // logged by the reload that reads it
		}
		for _, p := range mine {
			if !theirs[p.Masked()] {
				send = append(send, fleet.Entry{Kind: k, Prefix: p, By: "file"})
			}
		}
	}
	if s.rep == nil {
		return
	}
	theirs := map[netip.Prefix]fleet.Entry{}
	for _, e := range st.Of(fleet.Ban) {
		theirs[e.Prefix] = e
	}
	mine := map[netip.Prefix]reputation.Ban{}
	for _, b := range s.rep.Bans() {
		mine[b.Prefix] = b
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, e := range theirs {
		f.shared[p] = true
		if b, ok := mine[p]; !ok || !b.Created.Equal(e.Created) || !b.Expires.Equal(e.Expires) {
			s.rep.Add(banOf(e))
		}
	}
	for p, b := range mine {
		if _, ok := theirs[p]; ok {
			continue
		}
		if f.shared[p] {
			delete(f.shared, p)
			s.rep.Drop(p)
			continue
		}
		send = append(send, entryOf(b)) // made here while Redis was away
	}
}

// send writes what a resync found missing from the fleet, in one round
// trip and one announcement; an error is logged and left to the next
// resync.
func (f *fleetSync) send(es []fleet.Entry) {
	if len(es) == 0 {
		return
	}
	s := f.s
	if err := s.fleet.AddAll(context.Background(), es); err != nil {
		s.log.Warn("fleet: not shared yet, will be at the next resync", "err", err.Error())
		return
	}
	s.log.Info(fmt.Sprintf("fleet: %d decisions of this node sent to the fleet", len(es)))
	f.mu.Lock()
	for _, e := range es {
		if e.Kind == fleet.Ban {
			f.shared[e.Prefix.Masked()] = true
		}
	}
	f.mu.Unlock()
}

func (f *fleetSync) Shared(up bool) { f.down.Store(!up) }

// markShared records that the fleet has the ban on p.
func (f *fleetSync) markShared(p netip.Prefix) {
	f.mu.Lock()
	f.shared[p] = true
	f.mu.Unlock()
}

// banOf and entryOf translate a ban between the fleet and the book.
func banOf(e fleet.Entry) reputation.Ban {
	return reputation.Ban{Prefix: e.Prefix, Reason: e.Reason, By: e.By, Node: e.Node, Created: e.Created, Expires: e.Expires, Hits: e.Hits}
}

func entryOf(b reputation.Ban) fleet.Entry {
	return fleet.Entry{Kind: fleet.Ban, Prefix: b.Prefix, Reason: b.Reason, By: b.By, Node: b.Node, Created: b.Created, Expires: b.Expires}
}

// share writes e to the fleet, when there is one; an error is logged and
// left to the next resync, which sends what the fleet lacks. It reports
// whether the fleet has e now.
func (s *Server) share(e fleet.Entry) bool {
	if s.fleet == nil {
		return false
	}
	if err := s.fleet.Add(context.Background(), e); err != nil {
		s.log.Warn("fleet: not shared yet, will be at the next resync", "err", err.Error())
		return false
	}
	if e.Kind == fleet.Ban {
		s.fleetSync.markShared(e.Prefix.Masked())
	}
	return true
}

// applyPrefixes adds the fleet's networks missing from the trust (or
// deny) file to it and, when any was, reloads the running policy from the
// files. It returns how many were added.
func (s *Server) applyPrefixes(es []fleet.Entry, trust bool) (int, error) {
	if len(es) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg.Load()
	file := cfg.DenyFile
	if trust {
		file = cfg.TrustFile
	}
	ps := make([]netip.Prefix, len(es))
	comments := make(map[netip.Prefix]string, len(es))
	for i, e := range es {
		ps[i] = e.Prefix
		comments[e.Prefix] = fmt.Sprintf("%s by %s on %s %s (fleet)", e.Kind, e.By, e.Node, e.Created.UTC().Format(time.RFC3339))
	}
	n, err := appendPrefixes(file, ps, func(p netip.Prefix) string { return comments[p] })
	if err != nil || n == 0 {
		return n, err
	}
	pol, _, err := LoadPolicy(cfg)
	if err != nil {
		return n, err
	}
	s.admit.SetPolicy(pol)
	return n, nil
}

// runFleet listens to the fleet until ctx ends; ready is closed once the
// node has the fleet's decisions, or could not get them.
func (s *Server) runFleet(ctx context.Context, ready chan<- struct{}) {
	s.fleet.Run(ctx, s.fleetSync, ready)
}

// fleetBook is the score book as admission sees it in a fleet: a refusal
// by a ban counts towards the fleet's hits of the ban.
type fleetBook struct {
	*reputation.Book
	store *fleet.Store
}

func (b fleetBook) Banned(client netip.Addr) (reputation.Ban, bool) {
	ban, ok := b.Book.Banned(client)
	if ok {
		b.store.Hit(ban.Prefix)
	}
	return ban, ok
}

package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/fleet"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reputation"
)

// Reload re-reads the configuration file, the access map, the TCP-wrappers
// files and the trust and deny lists (SIGHUP, `mxguard reload`). Sessions
// that are running keep the settings they started with; nothing is
// dropped. A file with errors is reported and the old settings kept.
// Settings that need new sockets or a new spool (listen, data_dir,
// delivery, reputation, fleet, resolver, control) wait for a restart.
func (s *Server) Reload() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cfg.Load()
	next := cur
	if cur.Path != "" {
		c, err := config.Load(cur.Path)
		if err != nil {
			s.log.Error("reload failed, keeping the running configuration", "err", err.Error())
			return "", err
		}
		next = c
	}
	l, err := load(next)
	if err != nil {
		s.log.Error("reload failed, keeping the running configuration", "err", err.Error())
		return "", err
	}
	sc := s.smtpConfig(next, l.tls)
	for _, w := range l.warnings {
		s.log.Warn(w)
	}
	var restart []string
	if !slices.Equal(next.Listen, cur.Listen) {
		restart = append(restart, "listen")
	}
	if next.DataDir != cur.DataDir {
		restart = append(restart, "data_dir")
	}
	if next.Delivery != cur.Delivery {
		restart = append(restart, "[delivery]")
	}
	// The lists, their cache and its bounds are the checker's, made at
	// start; thresholds and action are the admission policy's.
	if n, c := next.DNSBL, cur.DNSBL; !slices.Equal(n.Sites, c.Sites) || n.Timeout != c.Timeout ||
		n.MinTTL != c.MinTTL || n.MaxTTL != c.MaxTTL || n.MaxInFlight != c.MaxInFlight {
		restart = append(restart, "[dnsbl] sites, timeout, min_ttl, max_ttl, max_in_flight")
	}
	a, b := next.Reputation, cur.Reputation
	a.NoFCrDNSPoints = b.NoFCrDNSPoints // the admission policy's: reloaded
	if a != b {
		restart = append(restart, "[reputation]")
	}
	if next.Fleet != cur.Fleet {
		restart = append(restart, "[fleet]")
	}
	if next.Resolver != cur.Resolver {
		restart = append(restart, "resolver")
	}
	if next.Control != cur.Control {
		restart = append(restart, "control")
	}
	s.cfg.Store(next)
	s.admit.SetPolicy(l.admit)
	s.envelope.Store(s.envelopePolicy(next, l.recipients))
	s.smtp.SetConfig(sc)
	msg := "configuration reloaded"
	if len(restart) > 0 {
		msg += fmt.Sprintf("; changes to %v take effect after a restart", restart)
	}
	s.log.Info(msg)
	return msg, nil
}

// Trust adds p to the trust file and to the running policy, and lifts the
// bans within it: trust wins. In a fleet it does so on every node.
func (s *Server) Trust(p netip.Prefix) (string, error) {
	msg, err := s.addPrefix(p, true)
	if err != nil {
		return "", err
	}
	if s.rep != nil {
		if n := s.rep.Lift(p); n > 0 {
			msg += fmt.Sprintf("; %d bans lifted", n)
		}
	}
	return msg + s.shareControl(fleet.Trust, p), nil
}

// Deny adds p to the deny file and to the running policy; in a fleet, on
// every node.
func (s *Server) Deny(p netip.Prefix) (string, error) {
	msg, err := s.addPrefix(p, false)
	if err != nil {
		return "", err
	}
	return msg + s.shareControl(fleet.Deny, p), nil
}

// shareControl sends an operator's trust or deny to the fleet (and, for
// trust, lifts the fleet's bans within p), and says how that went, for
// the operator's reply.
func (s *Server) shareControl(k fleet.Kind, p netip.Prefix) string {
	if s.fleet == nil {
		return ""
	}
	if !s.share(fleet.Entry{Kind: k, Prefix: p, By: "control"}) {
		return "; the fleet is unreachable: the other nodes get it when Redis returns"
	}
	if k == fleet.Trust {
		if _, err := s.fleet.Remove(context.Background(), fleet.Ban, p); err != nil {
			return "; shared with the fleet, but its bans could not be lifted: " + err.Error()
		}
	}
	return "; shared with the fleet"
}

// Unban lifts the bans within p and forgets its clients' scores; in a
// fleet, on every node.
func (s *Server) Unban(p netip.Prefix) (string, error) {
	if s.rep == nil {
		return "", errors.New("no bans: [reputation] ban_below and tarpit_below are both 0")
	}
	n := s.rep.Lift(p)
	msg := fmt.Sprintf("lifted %d bans in %s", n, p)
	s.log.Info(msg, "reason", reason.Control)
	if s.fleet != nil {
		m, err := s.fleet.Remove(context.Background(), fleet.Ban, p)
		if err != nil {
			// Not lifted for the fleet: the next resync would bring the
			// ban back here too. Say so rather than pretend.
			return "", fmt.Errorf("%s on this node, but not in the fleet (the ban returns at the next resync): %w", msg, err)
		}
		msg = fmt.Sprintf("lifted %d bans in %s (%d in the fleet)", n, p, m)
	}
	return msg, nil
}

// Bans lists the bans in force, as one line of JSON for the control
// socket (FormatBans renders it): the fleet's, with its hits, when there
// is a fleet and it answers, else this node's.
func (s *Server) Bans() (string, error) {
	bans := s.bans()
	b, err := json.Marshal(bans)
	return string(b), err
}

// bans is the bans in force, soonest to expire first: the fleet's when it
// answers, else this node's.
func (s *Server) bans() []reputation.Ban {
	if s.rep == nil {
		return nil
	}
	if s.fleet != nil {
		st, err := s.fleet.Read(context.Background())
		if err == nil {
			var out []reputation.Ban
			for _, e := range st.Of(fleet.Ban) {
				out = append(out, banOf(e))
			}
			slices.SortFunc(out, func(x, y reputation.Ban) int { return x.Expires.Compare(y.Expires) })
			return out
		}
		s.log.Warn("bans: the fleet is unreachable, listing this node's", "err", err.Error())
	}
	return s.rep.Bans()
}

// FormatBans renders the JSON of Bans for a terminal.
func FormatBans(w io.Writer, js string) error {
	var bans []reputation.Ban
	if err := json.Unmarshal([]byte(js), &bans); err != nil {
		return fmt.Errorf("bans: %w", err)
	}
	if len(bans) == 0 {
		fmt.Fprintln(w, "no bans")
		return nil
	}
	writeBans(w, bans)
	return nil
}

func (s *Server) addPrefix(p netip.Prefix, trust bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg.Load()
	msg, err := PersistPrefix(cfg, p, trust)
	if err != nil {
		return "", err
	}
	pol, _, err := LoadPolicy(cfg)
	if err != nil {
		return "", err
	}
	s.admit.SetPolicy(pol)
	s.log.Info(msg, "reason", reason.Control)
	return msg, nil
}

// Status is what the server is doing, as `mxguard status` shows it: the
// figures that matter under attack.
type Status struct {
	Uptime     time.Duration    `json:"uptime_ns"`
	Sessions   int              `json:"sessions"`
	GreetPause int64            `json:"greet_pause"`
	Accepted   int64            `json:"connections_accepted"`
	Admitted   int64            `json:"admitted"` // connections holding an admission slot now
	LastMinute metrics.Summary  `json:"last_minute"`
	Stress     *StressStatus    `json:"stress,omitempty"` // nil: not under stress
	BanCount   int              `json:"ban_count"`        // bans in force
	Bans       []reputation.Ban `json:"bans"`             // the statusBans newest of them
}

// StressStatus is the stress mode in force.
type StressStatus struct {
	Since time.Time `json:"since"`
	Why   string    `json:"why"` // what brought it about
}

// statusBans is how many bans status lists; `mxguard bans` lists all.
const statusBans = 10

// Status reports what the server is doing, as one line of JSON for the
// control socket (FormatStatus renders it).
func (s *Server) Status() (string, error) {
	st := Status{
		Uptime:     time.Since(s.started).Round(time.Second),
		Sessions:   s.smtp.Sessions(),
		GreetPause: s.smtp.InGreetPause(),
		Accepted:   s.accepted.Load(),
		Admitted:   s.admit.Children(),
		LastMinute: s.metrics.Summary(time.Minute, 10),
	}
	st.Stress = s.stressNow.Load()
	if s.rep != nil {
		bans := s.rep.Bans()
		st.BanCount = len(bans)
		slices.SortFunc(bans, func(x, y reputation.Ban) int { return y.Created.Compare(x.Created) })
		st.Bans = bans[:min(len(bans), statusBans)]
	}
	b, err := json.Marshal(st)
	return string(b), err
}

// FormatStatus renders the JSON of Status for a terminal.
func FormatStatus(w io.Writer, js string) error {
	var st Status
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	m := st.LastMinute
	fmt.Fprintf(w, "up %s, %d sessions now (%d in the greeting pause), %d connections accepted since start, %d admitted now\n",
		st.Uptime, st.Sessions, st.GreetPause, st.Accepted, st.Admitted)
	if st.Stress != nil {
		fmt.Fprintf(w, "under stress since %s: %s\n", st.Stress.Since.UTC().Format(time.RFC3339), st.Stress.Why)
	}
	fmt.Fprintf(w, "limits counted: %s\n", m.Limiter)
	var refused int64
	for _, n := range m.Refused {
		refused += n
	}
	fmt.Fprintf(w, "last minute: %d sessions admitted, %d messages accepted, %d refused\n", m.Admitted, m.Accepted, refused)
	reasons := make([]reason.Reason, 0, len(m.Refused))
	for r := range m.Refused {
		reasons = append(reasons, r)
	}
	slices.SortFunc(reasons, func(a, b reason.Reason) int { return cmp.Compare(m.Refused[b], m.Refused[a]) })
	for _, r := range reasons {
		fmt.Fprintf(w, "  %-22s %d\n", r, m.Refused[r])
	}
	for _, t := range []struct {
		title string
		list  []metrics.Offender
	}{{"top refused clients", m.TopIPs}, {"top refused networks", m.TopNets}} {
		if len(t.list) == 0 {
			continue
		}
		fmt.Fprintf(w, "%s (last minute):\n", t.title)
		for _, o := range t.list {
			p := o.Prefix.String()
			if o.Prefix.IsSingleIP() {
				p = o.Prefix.Addr().String()
			}
			fmt.Fprintf(w, "  %-22s %6d  %s\n", p, o.Count, o.Reason)
		}
	}
	if st.BanCount > 0 {
		fmt.Fprintf(w, "bans in force: %d", st.BanCount)
		if st.BanCount > len(st.Bans) {
			fmt.Fprintf(w, " (the %d newest; mxguard bans lists all)", len(st.Bans))
		}
		fmt.Fprintln(w)
		writeBans(w, st.Bans)
	}
	return nil
}

// writeBans writes one line a ban.
func writeBans(w io.Writer, bans []reputation.Ban) {
	for _, b := range bans {
		by := b.By
		if b.Node != "" {
			by += " on " + b.Node // a fleet's
		}
		fmt.Fprintf(w, "  %-22s until %s  %-20s by %-6s %d hits\n", b.Prefix, b.Expires.UTC().Format(time.RFC3339), b.Reason, by, b.Hits)
	}
}

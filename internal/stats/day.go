// Package stats keeps mxguard's traffic over days, in figures small enough
// to hold for weeks: what `mxguard suggest` proposes limits from, the way
// the seed's admin picked his ("check the average number of sendmail
// processes on a standard day, and triple that number") and built his
// hosts.deny (the dial-up networks in his logs).
//
// A Recorder turns what happens (sessions opening and closing, a sample
// of the load each second, refusals, messages accepted) into one Day
// record a day: the distribution of sessions open and of connections
// accepted per second, the busiest minute of each client that delivered
// mail, and the networks and reverse-DNS suffixes that drew refusals or
// delivered mail. The server feeds one from the counters of its metrics
// (internal/metrics) and saves it in its data directory (Save); the log
// readers of internal/suggest feed one from log lines. Every part is
// bounded, whatever the traffic: see MaxRefusers, MaxDeliverers,
// MaxClients, KeepDays.
package stats

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// Day is one day's traffic (a UTC day).
type Day struct {
	Date string `json:"date"` // YYYY-MM-DD
	// Window is the ClientRate window the clients' connections were
	// counted in, in seconds (connection_rate_window_size).
	Window int64 `json:"window_s"`
	// Concurrency is the sessions open, sampled once a second.
	Concurrency Hist `json:"concurrency"`
	// AcceptRate is the connections accepted in each sampled second.
	AcceptRate Hist `json:"accept_rate"`
	// ClientRate and ClientConn are, for each client that delivered mail
	// and each hour it did, the most connections it opened in one window
	// and the most sessions it had open at once.
	ClientRate Hist `json:"client_rate"`
	ClientConn Hist `json:"client_conn"`

	Accepted int64                   `json:"accepted"` // connections accepted
	Sessions int64                   `json:"sessions"` // sessions started
	Messages int64                   `json:"messages"` // messages accepted
	Refused  map[reason.Reason]int64 `json:"refused,omitempty"`

	// Networks (/24, /64) and Suffixes (reverse-DNS) that drew refusals
	// the client is to blame for (Blamed) or delivered mail.
	Networks []Source `json:"networks,omitempty"`
	Suffixes []Source `json:"suffixes,omitempty"`
	// UntrackedDeliveries are messages from networks or suffixes the
	// tables had no room for; UntrackedClients, clients the client table
	// had no room for.
	UntrackedDeliveries int64 `json:"untracked_deliveries,omitempty"`
	UntrackedClients    int64 `json:"untracked_clients,omitempty"`
}

// dateLayout is how a Day's date is written.
const dateLayout = "2006-01-02"

// DateOf is the day (UTC) t falls on, as Day.Date writes it.
func DateOf(t time.Time) string { return t.UTC().Format(dateLayout) }

// check reports what makes d unlike a day mxguard writes.
func (d *Day) check() error {
	if _, err := time.Parse(dateLayout, d.Date); err != nil {
		return fmt.Errorf("date %q is not YYYY-MM-DD", d.Date)
	}
	if d.Window < 0 {
		return fmt.Errorf("%s: window_s %d is negative", d.Date, d.Window)
	}
	if len(d.Networks) > MaxRefusers+MaxDeliverers || len(d.Suffixes) > MaxRefusers+MaxDeliverers {
		return fmt.Errorf("%s: more networks or suffixes than a day holds (%d)", d.Date, MaxRefusers+MaxDeliverers)
	}
	if len(d.Refused) > len(reason.All())+1 {
		return fmt.Errorf("%s: %d reasons of refusal, more than there are", d.Date, len(d.Refused))
	}
	for i, list := range [][]Source{d.Networks, d.Suffixes} {
		for _, s := range list {
			if len(s.Refused) > maxReasons+1 {
				return fmt.Errorf("%s: source %q has %d reasons, more than the %d kept", d.Date, s.Key, len(s.Refused), maxReasons+1)
			}
			if i == 0 {
				if p, err := netip.ParsePrefix(s.Key); err != nil || p != Network(p.Addr()) {
					return fmt.Errorf("%s: network %q is not a /24 or /64", d.Date, s.Key)
				}
			} else if Suffix("x."+s.Key) != s.Key {
				return fmt.Errorf("%s: suffix %q is not a reverse-DNS suffix", d.Date, s.Key)
			}
		}
	}
	return nil
}

// Merge adds o's figures to d (the same date, or days merged for a
// longer view). The sources of both are added up by key; the result may
// hold more of them than one day's tables do.
func (d *Day) Merge(o Day) {
	d.Concurrency.Merge(o.Concurrency)
	d.AcceptRate.Merge(o.AcceptRate)
	d.ClientRate.Merge(o.ClientRate)
	d.ClientConn.Merge(o.ClientConn)
	d.Accepted += o.Accepted
	d.Sessions += o.Sessions
	d.Messages += o.Messages
	for r, n := range o.Refused {
		if d.Refused == nil {
			d.Refused = make(map[reason.Reason]int64)
		}
		d.Refused[r] += n
	}
	d.Networks = mergeSources(d.Networks, o.Networks)
	d.Suffixes = mergeSources(d.Suffixes, o.Suffixes)
	d.UntrackedDeliveries += o.UntrackedDeliveries
	d.UntrackedClients += o.UntrackedClients
	if d.Window == 0 {
		d.Window = o.Window
	}
}

func mergeSources(a, b []Source) []Source {
	idx := make(map[string]int, len(a))
	out := make([]Source, 0, len(a)+len(b))
	for _, s := range append(append([]Source(nil), a...), b...) {
		i, ok := idx[s.Key]
		if !ok {
			idx[s.Key] = len(out)
			out = append(out, Source{Key: s.Key, Delivered: s.Delivered, Refused: copyReasons(s.Refused)})
			continue
		}
		out[i].Delivered += s.Delivered
		for r, n := range s.Refused {
			if out[i].Refused == nil {
				out[i].Refused = make(map[reason.Reason]int64)
			}
			out[i].Refused[r] += n
		}
	}
	return out
}

func copyReasons(m map[reason.Reason]int64) map[reason.Reason]int64 {
	if m == nil {
		return nil
	}
	c := make(map[reason.Reason]int64, len(m))
	for r, n := range m {
		c[r] = n
	}
	return c
}

// Blamed reports whether a refusal for why tells something about the
// client: every refusal but those of the server's own state or of the
// operator (shutdown, the limit store, storage, delivery, the control
// socket), a stall (throttle), a recipient the downstream could not
// verify, and a DISCARD. These count toward a network's or a suffix's
// refusals.
func Blamed(why reason.Reason) bool {
	switch why {
	case reason.Throttle, reason.Shutdown, reason.Limiter, reason.Storage, reason.QueueLifetime,
		reason.Control, reason.Unverified, reason.Discard:
		return false
	}
	return true
}

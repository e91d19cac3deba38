package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reputation"
)

// snapshot is the figures at one moment, shared by every page and stream
// asking within refresh of it.
type snapshot struct {
	at   time.Time
	view *view

	once  sync.Once
	frags []byte // the live sections as one JSON object, made when a stream asks
}

// sections are the parts of the page the live stream replaces, by the id
// of their element and the name of their template.
var sections = []string{"now", "charts", "offenders", "bans", "lists"}

// view is what the templates show.
type view struct {
	Host    string
	Now     time.Time
	Uptime  time.Duration
	G       metrics.Gauges
	Stress  *Stress
	CanAct  bool // a token is configured: the action buttons are shown
	BansOn  bool
	Charts  []chart
	Spans   []offenders // the last minute, the last hour
	Bans    []banRow
	Denied  list
	Trusted list
}

// offenders are the top clients, networks and names of one span.
type offenders struct {
	ID, Span string
	Refused  int64
	IPs      []offender
	Nets     []offender
	Names    []metrics.NameOffender
}

// offender is a client or network row, with what is done about it.
type offender struct {
	Label  string       // the address, or the network in CIDR
	Prefix netip.Prefix // what the row's actions act on
	Count  int64
	Reason reason.Reason
	State  string // "denied", "banned", "trusted" or ""
	Act    bool   // the action buttons are shown
	Bans   bool   // and the ban buttons among them
}

type banRow struct {
	reputation.Ban
	Left time.Duration
}

type list struct {
	Items []netip.Prefix
	More  int
}

// snapshot returns the figures of now, taking them again when the last
// ones are older than refresh.
func (c *Console) snapshot() *snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if s := c.snap; s != nil && !now.Before(s.at) && now.Sub(s.at) < refresh {
		return s
	}
	c.snap = &snapshot{at: now, view: c.build(now)}
	return c.snap
}

// invalidate makes the next page or stream take the figures again, so
// that an action shows at once.
func (c *Console) invalidate() {
	c.mu.Lock()
	c.snap = nil
	c.mu.Unlock()
}

// build reads the figures: the counters from metrics, the rest from the
// server.
func (c *Console) build(now time.Time) *view {
	st := c.cfg.Server.ConsoleState()
	m := c.cfg.Metrics
	tok, err := c.cfg.Token()
	v := &view{
		Host:   st.Hostname,
		Now:    now,
		Uptime: now.Sub(st.Started),
		G:      m.Gauges(),
		Stress: st.Stress,
		CanAct: tok != "" || err != nil,
		BansOn: st.BansOn,
	}
	if m != nil {
		v.Charts = charts(m.Recent.Series(time.Hour))
		for _, sp := range []struct {
			id, name string
			span     time.Duration
		}{{"m", "last minute", time.Minute}, {"h", "last hour", time.Hour}} {
			s := c.summary(m, sp.span, now, st.Name)
			o := offenders{ID: sp.id, Span: sp.name, Names: s.TopNames}
			for _, n := range s.Refused {
				o.Refused += n
			}
			o.IPs = rows(s.TopIPs, &st, v.CanAct)
			o.Nets = rows(s.TopNets, &st, v.CanAct)
			v.Spans = append(v.Spans, o)
		}
	}
	for _, b := range st.Bans {
		v.Bans = append(v.Bans, banRow{Ban: b, Left: b.Expires.Sub(now)})
	}
	v.Denied, v.Trusted = shorten(st.Denied), shorten(st.Trusted)
	return v
}

// summary is the offenders of the last span. The hour's are taken again
// at each snapshot while that is cheap, and only every hourRefresh once
// it is not (a flood from many addresses). c.mu must be held.
func (c *Console) summary(m *metrics.Metrics, span time.Duration, now time.Time, name func(netip.Addr) string) metrics.Summary {
	if span != time.Hour {
		return m.Recent.SummaryNamed(span, topN, name)
	}
	if c.hourAt.IsZero() || c.hourCost < cheapHour || now.Before(c.hourAt) || now.Sub(c.hourAt) >= hourRefresh {
		start := time.Now()
		c.hour, c.hourAt = m.Recent.SummaryNamed(span, topN, name), now
		c.hourCost = time.Since(start)
	}
	return c.hour
}

func rows(top []metrics.Offender, st *State, act bool) []offender {
	out := make([]offender, 0, len(top))
	for _, o := range top {
		r := offender{Label: o.Prefix.String(), Prefix: o.Prefix, Count: o.Count, Reason: o.Reason, Act: act, Bans: act && st.BansOn}
		if o.Prefix.IsSingleIP() {
			r.Label = o.Prefix.Addr().String()
		}
		switch {
		case within(st.Denied, o.Prefix):
			r.State = "denied"
		case slices.ContainsFunc(st.Bans, func(b reputation.Ban) bool { return covers(b.Prefix, o.Prefix) }):
			r.State = "banned"
		case within(st.Trusted, o.Prefix):
			r.State = "trusted"
		}
		out = append(out, r)
	}
	return out
}

// within reports whether one of ps covers p.
func within(ps []netip.Prefix, p netip.Prefix) bool {
	return slices.ContainsFunc(ps, func(q netip.Prefix) bool { return covers(q, p) })
}

// covers reports whether q holds all of p.
func covers(q, p netip.Prefix) bool { return q.Bits() <= p.Bits() && q.Contains(p.Addr()) }

func shorten(ps []netip.Prefix) list {
	if len(ps) > maxList {
		return list{Items: ps[:maxList], More: len(ps) - maxList}
	}
	return list{Items: ps}
}

// fragments renders the live sections once for every stream of s.
func (c *Console) fragments(s *snapshot) []byte {
	s.once.Do(func() {
		out := make(map[string]string, len(sections))
		var b bytes.Buffer
		for _, name := range sections {
			b.Reset()
			if err := c.tmpl.ExecuteTemplate(&b, name, s.view); err != nil {
				c.cfg.Log.Warn("console: rendering a section", "section", name, "err", err.Error())
				continue
			}
			out[name] = b.String()
		}
		s.frags, _ = json.Marshal(out)
	})
	return s.frags
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"age":   age,
	"utc":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"clock": func(t time.Time) string { return t.UTC().Format("15:04:05Z") },
	"prefix": func(p netip.Prefix) string {
		if p.IsSingleIP() {
			return p.Addr().String()
		}
		return p.String()
	},
	"action": func(verb string, p netip.Prefix) string { return verb + " " + p.String() },
}

// age writes a duration as an operator reads it at a glance: "42s",
// "12m", "3h12m", "2d3h".
func age(d time.Duration) string {
	d = max(d, 0).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return twoUnits(int(d.Hours()), "h", int(d.Minutes())%60, "m")
	}
	return twoUnits(int(d.Hours())/24, "d", int(d.Hours())%24, "h")
}

func twoUnits(a int, au string, b int, bu string) string {
	if b == 0 {
		return strconv.Itoa(a) + au
	}
	return strconv.Itoa(a) + au + strconv.Itoa(b) + bu
}

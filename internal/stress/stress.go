// Package stress decides when the server is overloaded and should switch
// to its stress profile, Postfix's adaptive answer to a flood
// (STRESS_README): shorter timeouts, no patience for errors or junk
// commands, a shorter greeting pause, DNS-listed clients refused at once.
//
// The server is under stress when, at a sample, the admitted sessions are
// at or above a share of max_daemon_children, or a listener's accept queue
// holds more than a number of connections (the accept loop falls behind),
// or accepting failed (out of file descriptors). It leaves stress only
// after no sample has shown any of these for the hold time, so that a
// flood that pauses does not flap the profile on and off.
//
// The Monitor is a pure decision over samples; the caller samples (each
// second) and applies the profile.
package stress

import (
	"fmt"
	"time"
)

// Config is when to engage and how long to hold.
type Config struct {
	SessionsPercent int           // of MaxSessions; 0: sessions are not watched
	MaxSessions     int64         // max_daemon_children; 0: no limit, sessions are not watched
	AcceptBacklog   int           // connections waiting in a listener's accept queue; 0: not watched
	Hold            time.Duration // calm needed before leaving stress
}

// Sample is the load at one moment.
type Sample struct {
	Sessions     int64  // admitted sessions open
	Queued       int    // the longest accept queue
	Listener     string // the listener with that queue
	AcceptFailed bool   // an accept failed since the last sample
}

// Transition is a change of state, with what brought it about.
type Transition struct {
	On  bool
	Why string
}

// Monitor is the stress state. It is not safe for concurrent use: one
// sampler owns it.
type Monitor struct {
	cfg      Config
	on       bool
	lastHigh time.Time
}

// New returns a Monitor, not under stress.
func New(cfg Config) *Monitor { return &Monitor{cfg: cfg} }

// SetConfig changes when to engage and how long to hold (a reload); the
// state stays as it is until the next sample.
func (m *Monitor) SetConfig(cfg Config) { m.cfg = cfg }

// On reports whether the server is under stress.
func (m *Monitor) On() bool { return m.on }

// high says why s is a load that puts the server under stress, or "".
func (m *Monitor) high(s Sample) string {
	c := &m.cfg
	if c.SessionsPercent > 0 && c.MaxSessions > 0 && s.Sessions*100 >= c.MaxSessions*int64(c.SessionsPercent) {
		return fmt.Sprintf("%d of %d sessions open (at or above %d%%)", s.Sessions, c.MaxSessions, c.SessionsPercent)
	}
	if c.AcceptBacklog > 0 && s.Queued >= c.AcceptBacklog {
		return fmt.Sprintf("%d connections waiting to be accepted on %s (at or above %d)", s.Queued, s.Listener, c.AcceptBacklog)
	}
	if s.AcceptFailed {
		return "accepting connections failed"
	}
	return ""
}

// Observe takes the sample made at now and returns the transition it
// brings about, if any.
func (m *Monitor) Observe(now time.Time, s Sample) (Transition, bool) {
	if why := m.high(s); why != "" {
		m.lastHigh = now
		if !m.on {
			m.on = true
			return Transition{On: true, Why: why}, true
		}
		return Transition{}, false
	}
	if m.on && now.Sub(m.lastHigh) >= m.cfg.Hold {
		m.on = false
		return Transition{On: false, Why: fmt.Sprintf("load below the thresholds for %s", m.cfg.Hold)}, true
	}
	return Transition{}, false
}

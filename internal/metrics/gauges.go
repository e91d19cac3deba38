package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The gauges the server registers with GaugeFunc that Gauges reads.
const (
	SpoolMessages = "mxguard_spool_messages"
	SpoolOldest   = "mxguard_spool_oldest_seconds"
	BansNow       = "mxguard_bans"
)

// Gauges is the state of the moment, read from the very collectors that
// /metrics serves (the console shows these, so that it never disagrees
// with Prometheus).
type Gauges struct {
	ConnectionsAccepted int64         // since start
	MessagesAccepted    int64         // since start
	Sessions            int64         // open now
	GreetPause          int64         // held in the greeting pause now
	Stress              bool          // under stress now
	Limiter             string        // LimiterLocal, LimiterRedis or LimiterFallback
	SpoolMessages       int64         // waiting in the spool
	SpoolOldest         time.Duration // the oldest one's age
	Bans                int64         // in force; -1 when bans are off (no gauge)
}

// Gauges reads the figures of the moment. It costs one read of each
// collector (and the spool's directory, as a scrape does), made only when
// asked: nothing is kept up to date for it.
func (m *Metrics) Gauges() Gauges {
	if m == nil {
		return Gauges{Bans: -1}
	}
	g := Gauges{
		ConnectionsAccepted: int64(value(m.accepted)),
		MessagesAccepted:    int64(value(m.msgAccepted)),
		Sessions:            int64(value(m.sessions)),
		GreetPause:          int64(value(m.greetPause)),
		Stress:              value(m.stress) != 0,
		Limiter:             m.Recent.limiterNow(),
		Bans:                -1,
	}
	m.funcsMu.Lock()
	spool, oldest, bans := m.funcs[SpoolMessages], m.funcs[SpoolOldest], m.funcs[BansNow]
	m.funcsMu.Unlock()
	if spool != nil {
		g.SpoolMessages = int64(value(spool))
	}
	if oldest != nil {
		g.SpoolOldest = time.Duration(value(oldest) * float64(time.Second)).Round(time.Second)
	}
	if bans != nil {
		g.Bans = int64(value(bans))
	}
	return g
}

// value is a counter's or a gauge's value, as a scrape would read it.
func value(c prometheus.Metric) float64 {
	var d dto.Metric
	if c.Write(&d) != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}

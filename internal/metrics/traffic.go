package metrics

import (
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// trafficWindow is the ClientRate window Traffic counts clients'
// connections in until the server sets the configured one.
const trafficWindow = time.Minute

// Traffic is fed by the same calls that move the Prometheus counters
// (Refused, SessionStart and SessionEnd, MessageAccepted), and sampled
// from the counters themselves (SampleTraffic), so that `mxguard suggest`,
// /metrics and `mxguard status` never tell different figures. It adds
// what labels may not hold: the client, its network and its provider.

// trafficRefused adds a refusal to Traffic; a refusal at connect is also
// a connection the client made, for its count in the ClientRate window
// (an admitted one is counted at SessionStart).
func (m *Metrics) trafficRefused(r reason.Reason, client netip.Addr, host string) {
	now := time.Now()
	if stage[r] == reason.StageConnect {
		m.Traffic.Connection(now, client)
	}
	m.Traffic.Refused(now, r, client, host)
}

func (m *Metrics) trafficSession(client netip.Addr, start bool) {
	now := time.Now()
	if start {
		m.Traffic.Connection(now, client)
		m.Traffic.SessionStart(now, client)
	} else {
		m.Traffic.SessionEnd(now, client)
	}
}

// stage is each reason's stage, for trafficRefused.
var stage = func() map[reason.Reason]reason.Stage {
	m := make(map[reason.Reason]reason.Stage)
	for _, i := range reason.All() {
		m[i.Reason] = i.Stage
	}
	return m
}()

// SampleTraffic gives Traffic the load at now, read from the collectors
// /metrics serves: the sessions open and the connections accepted so
// far. The server calls it once a second.
func (m *Metrics) SampleTraffic(now time.Time) {
	if m == nil {
		return
	}
	m.Traffic.Sample(now, int64(value(m.sessions)), int64(value(m.accepted)))
}

// Package metrics counts what mxguard does: connections accepted, every
// refusal and cut-off by its reason, sessions open and held in the greeting
// pause, command latencies, messages accepted and delivered, fsync and DNS
// latencies, the state of the shared limit store. Prometheus scrapes the
// counters through the official client (served on the admin listener), and
// `mxguard status` and the console read the same ones: there is one source
// of figures.
//
// Names follow Prometheus's conventions and the field's (postfix_exporter,
// mox): mxguard_ prefix, _total for counters, base units. Label values come
// from fixed vocabularies only (reason names, SMTP verbs, reply codes,
// transports), never from a client: the number of series is bounded
// whatever a flood sends. A nil *Metrics counts nothing, so that the
// packages that take one work without it (tests, tools).
package metrics

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
)

// Metrics is one server's counters, registered in its own registry.
type Metrics struct {
	Registry *prometheus.Registry

	accepted    prometheus.Counter
	refused     map[reason.Reason]prometheus.Counter
	refusedVec  *prometheus.CounterVec
	sessions    prometheus.Gauge
	greetPause  prometheus.Gauge
	commands    *prometheus.HistogramVec
	msgAccepted prometheus.Counter
	outcomes    *prometheus.CounterVec // {transport, outcome}
	fsync       prometheus.Histogram
	dnsLookup   prometheus.Histogram
	dnsCache    *prometheus.CounterVec
	limiter     *prometheus.GaugeVec
	redisErrors prometheus.Counter
	stalls      prometheus.Counter
	tarpitted   prometheus.Counter
	tarpitTime  prometheus.Counter
	bans        prometheus.Counter
	stress      prometheus.Gauge
	stressTrans *prometheus.CounterVec

	// Traffic keeps the days, for `mxguard suggest` (see traffic.go).
	Traffic *stats.Recorder

	// Recent keeps the last hour, minute by minute, for `mxguard status`
	// and the console: refusals by reason and the clients and networks
	// that drew them.
	Recent *Recent

	funcsMu sync.Mutex
	funcs   map[string]prometheus.GaugeFunc // GaugeFunc's, by name, for Gauges
}

// The latency buckets: an SMTP command takes from microseconds (a refusal
// from memory) to the rcpt timeout (a probe of the downstream); an fsync
// from a tenth of a millisecond (a good write cache) to seconds (none).
var (
	commandBuckets = []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 30}
	fsyncBuckets   = []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .5, 1}
	dnsBuckets     = []float64{.0005, .001, .005, .01, .05, .1, .25, .5, 1, 2.5}
)

// Transports a message goes out by, for the delivery counters.
const (
	TransportMaildir = "maildir"
	TransportSMTP    = "smtp"
	TransportLMTP    = "lmtp"
)

// Outcomes of one recipient's delivery attempt.
const (
	Delivered = "delivered"
	Deferred  = "deferred"
	Bounced   = "bounced"
)

// Limiter backends, for LimiterState.
const (
	LimiterLocal    = "local"    // in-process counters, by configuration
	LimiterRedis    = "redis"    // shared counters in Redis
	LimiterFallback = "fallback" // Redis unreachable: local counters meanwhile
)

// New returns Metrics registered in a new registry, with Go's runtime and
// the process's figures beside them.
func New() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), Recent: NewRecent(time.Now), Traffic: stats.NewRecorder(trafficWindow, time.Now())}
	f := factory{m.Registry}
	m.accepted = f.counter("mxguard_connections_accepted_total", "Connections accepted by the listeners, before admission.")
	m.refusedVec = f.counterVec("mxguard_refusals_total",
		"Connections, commands, recipients and messages refused or cut off, by the stage of the connection and the reason (docs/SPEC.md, Reasons).",
		"stage", "reason")
	m.refused = make(map[reason.Reason]prometheus.Counter)
	for _, i := range reason.All() {
		// Every series exists from the start: a rate over a counter that
		// appears with its first increment misses that increment.
		m.refused[i.Reason] = m.refusedVec.WithLabelValues(string(i.Stage), string(i.Reason))
	}
	m.sessions = f.gauge("mxguard_sessions_open", "SMTP sessions open now (admitted connections).")
	m.greetPause = f.gauge("mxguard_sessions_greet_pause", "Sessions held in the greeting pause now.")
	m.commands = f.histogramVec("mxguard_command_duration_seconds",
		"Time from a command's arrival to its reply, by command and reply code.", commandBuckets, "cmd", "code")
	m.msgAccepted = f.counter("mxguard_messages_accepted_total", "Messages accepted (250 after the final dot), durable on disk.")
	m.outcomes = f.counterVec("mxguard_deliveries_total",
		"Delivery attempts per recipient, by transport (maildir, smtp, lmtp) and outcome (delivered, deferred, bounced).",
		"transport", "outcome")
	for _, t := range []string{TransportMaildir, TransportSMTP, TransportLMTP} {
		for _, o := range []string{Delivered, Deferred, Bounced} {
			m.outcomes.WithLabelValues(t, o)
		}
	}
	m.fsync = f.histogram("mxguard_fsync_duration_seconds", "fsync(2) of message files and directories (spool and Maildir).", fsyncBuckets)
	m.dnsLookup = f.histogram("mxguard_dns_lookup_duration_seconds", "Reverse and forward DNS lookups of clients that went to the DNS server.", dnsBuckets)
	m.dnsCache = f.counterVec("mxguard_dns_cache_lookups_total", "Client DNS verifications by cache result (hit, miss).", "result")
	m.dnsCache.WithLabelValues("hit")
	m.dnsCache.WithLabelValues("miss")
	m.limiter = f.gaugeVec("mxguard_limiter_backend", "1 for the backend the per-client limits are counted in now (local, redis, fallback), 0 for the others.", "backend")
	m.LimiterState(LimiterLocal)
	m.redisErrors = f.counter("mxguard_redis_errors_total", "Calls to the shared Redis store that failed.")
	m.stalls = f.counter("mxguard_throttle_stalls_total", "Connections connection_rate_throttle held back to a later second.")
	m.tarpitted = f.counter("mxguard_tarpit_delays_total", "Batches of replies held back from clients whose score is below [reputation] tarpit_below.")
	m.tarpitTime = f.counter("mxguard_tarpit_delay_seconds_total", "Time replies were held back by the tarpit, summed over sessions.")
	m.stress = f.gauge("mxguard_stress", "1 while the server is under stress ([stress]), 0 otherwise.")
	m.stressTrans = f.counterVec("mxguard_stress_transitions_total", "Times the server went under stress (to=on) and out of it (to=off).", "to")
	m.stressTrans.WithLabelValues("on")
	m.stressTrans.WithLabelValues("off")
	m.bans = f.counter("mxguard_bans_total", "Clients banned for their score ([reputation] ban_below).")
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type factory struct{ r *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.r.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.r.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.r.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.r.MustRegister(h)
	return h
}

// GaugeFunc registers a gauge whose value is read at each scrape (spool
// depth, the oldest queued message).
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	if m == nil {
		return
	}
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	m.Registry.MustRegister(g)
	m.funcsMu.Lock()
	if m.funcs == nil {
		m.funcs = map[string]prometheus.GaugeFunc{}
	}
	m.funcs[name] = g
	m.funcsMu.Unlock()
}

// CounterFunc registers counters whose values another package keeps:
// collect is called at each scrape and emits each series' value with its
// label values (from a fixed vocabulary, never from a client).
func (m *Metrics) CounterFunc(name, help string, labels []string, collect func(emit func(v float64, labelValues ...string))) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&funcCollector{desc: prometheus.NewDesc(name, help, labels, nil), collect: collect})
}

type funcCollector struct {
	desc    *prometheus.Desc
	collect func(emit func(v float64, labelValues ...string))
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(func(v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, v, lv...)
	})
}

// ConnAccepted counts a connection the listener accepted.
func (m *Metrics) ConnAccepted() {
	if m != nil {
		m.accepted.Inc()
	}
}

// Refused counts a refusal or cut-off for r from client, named host ("" if
// unknown), which also goes into Recent and Traffic (client is never a
// label).
func (m *Metrics) Refused(r reason.Reason, client netip.Addr, host string) {
	if m == nil {
		return
	}
	if c, ok := m.refused[r]; ok {
		c.Inc()
	}
	m.Recent.Refused(r, client)
	m.trafficRefused(r, client, host)
}

// SessionStart and SessionEnd keep the count of open sessions, and each
// client's in Traffic.
func (m *Metrics) SessionStart(client netip.Addr, host string) {
	if m != nil {
		m.sessions.Inc()
		m.Recent.Admitted()
		m.trafficSession(client, true)
	}
}

// SessionEnd: see SessionStart.
func (m *Metrics) SessionEnd(client netip.Addr) {
	if m != nil {
		m.sessions.Dec()
		m.trafficSession(client, false)
	}
}

// GreetPause adds delta (+1 entering, -1 leaving) to the sessions held in
// the greeting pause.
func (m *Metrics) GreetPause(delta int) {
	if m != nil {
		m.greetPause.Add(float64(delta))
	}
}

// Command records how long a command took to its reply.
func (m *Metrics) Command(cmd string, code int, d time.Duration) {
	if m != nil {
		m.commands.WithLabelValues(cmd, codeLabel(code)).Observe(d.Seconds())
	}
}

// codeLabel is the reply code as a label; codes are three digits, so the
// set is bounded whatever a client does.
func codeLabel(code int) string {
	if code < 200 || code > 599 {
		return "other"
	}
	return codeLabels[code-200]
}

// codeLabels are the codes' strings, made once: a command's observation
// then allocates nothing.
var codeLabels = func() (l [400]string) {
	for i := range l {
		l[i] = strconv.Itoa(200 + i)
	}
	return l
}()

// MessageAccepted counts a message made durable and acknowledged, from
// client, named host.
func (m *Metrics) MessageAccepted(client netip.Addr, host string) {
	if m != nil {
		m.msgAccepted.Inc()
		m.Recent.Accepted()
		m.Traffic.Message(time.Now(), client, host)
	}
}

// Delivery counts one recipient's delivery attempt.
func (m *Metrics) Delivery(transport, outcome string) {
	if m != nil {
		m.outcomes.WithLabelValues(transport, outcome).Inc()
	}
}

// Fsync records one fsync's duration.
func (m *Metrics) Fsync(d time.Duration) {
	if m != nil {
		m.fsync.Observe(d.Seconds())
	}
}

// DNSLookup records one lookup that went to the DNS server.
func (m *Metrics) DNSLookup(d time.Duration) {
	if m != nil {
		m.dnsLookup.Observe(d.Seconds())
	}
}

// DNSCache counts a verification answered from the cache (hit) or not.
func (m *Metrics) DNSCache(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.dnsCache.WithLabelValues("hit").Inc()
	} else {
		m.dnsCache.WithLabelValues("miss").Inc()
	}
}

// LimiterState sets the backend the limits are counted in now.
func (m *Metrics) LimiterState(backend string) {
	if m == nil {
		return
	}
	for _, b := range []string{LimiterLocal, LimiterRedis, LimiterFallback} {
		v := 0.0
		if b == backend {
			v = 1
		}
		m.limiter.WithLabelValues(b).Set(v)
	}
	m.Recent.SetLimiter(backend)
}

// RedisError counts a failed call to Redis.
func (m *Metrics) RedisError() {
	if m != nil {
		m.redisErrors.Inc()
	}
}

// ThrottleStall counts a connection held back by connection_rate_throttle.
func (m *Metrics) ThrottleStall() {
	if m != nil {
		m.stalls.Inc()
	}
}

// Tarpit counts a batch of replies held back for d.
func (m *Metrics) Tarpit(d time.Duration) {
	if m != nil {
		m.tarpitted.Inc()
		m.tarpitTime.Add(d.Seconds())
	}
}

// Stress records a transition into stress mode (on) or out of it.
func (m *Metrics) Stress(on bool) {
	if m == nil {
		return
	}
	if on {
		m.stress.Set(1)
		m.stressTrans.WithLabelValues("on").Inc()
	} else {
		m.stress.Set(0)
		m.stressTrans.WithLabelValues("off").Inc()
	}
}

// Ban counts a client banned for its score.
func (m *Metrics) Ban() {
	if m != nil {
		m.bans.Inc()
	}
}

// Summary is Recent's summary, or an empty one from a nil Metrics.
func (m *Metrics) Summary(span time.Duration, n int) Summary {
	if m == nil {
		return Summary{Refused: map[reason.Reason]int64{}}
	}
	return m.Recent.Summary(span, n)
}

// Gatherer is what /metrics serves: the registry, or an empty one from a
// nil Metrics.
func (m *Metrics) Gatherer() prometheus.Gatherer {
	if m == nil {
		return prometheus.NewRegistry()
	}
	return m.Registry
}

// Package server assembles mxguard from its parts, following DESIGN.md's
// data path: listeners → the PROXY header of a load balancer's connection
// (internal/proxyhdr) → admission (internal/admit) → the SMTP protocol
// (internal/smtpd) → the durable spool (internal/spool) → delivery
// (internal/deliver). It owns the process-level concerns: graceful stop,
// reload on SIGHUP, the control socket.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/admin"
	"github.com/mxguard/mxguard/internal/admit"
	"github.com/mxguard/mxguard/internal/cache"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
	"github.com/mxguard/mxguard/internal/deliver"
	"github.com/mxguard/mxguard/internal/fleet"
	"github.com/mxguard/mxguard/internal/hold"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/policy"
	"github.com/mxguard/mxguard/internal/proxyhdr"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/recipients"
	"github.com/mxguard/mxguard/internal/redisconn"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/reputation"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/spool"
)

// ShutdownGrace is how long a graceful stop lets sessions inside a mail
// transaction finish before they are cut off.
const ShutdownGrace = 30 * time.Second

// DeliveryWorkers is how many messages the delivery queue hands on at the
// same time. Delivery waits on fsyncs (Maildir) or on the network (relay),
// not on the CPU: enough workers to keep the disk's queue full. It is also
// the most relayed messages a crash can deliver twice (see the deliver
// package).
const DeliveryWorkers = 16

// Server is one mxguard node.
type Server struct {
	log       *slog.Logger
	cfg       atomic.Pointer[config.Config]
	admit     *admit.Admitter
	smtp      *smtpd.Server
	spool     *spool.Spool
	queue     *deliver.Queue
	maildir   *deliver.Maildir // set when delivery is local: DATA stores straight into Maildir
	store     store
	envelope  atomic.Pointer[policy.Policy]
	verify    policy.Verifier // nil unless [delivery] verify = "probe"
	metrics   *metrics.Metrics
	rep       *reputation.Book      // nil: no scores
	redis     redis.UniversalClient // nil: no fleet
	fleet     *fleet.Store          // nil: no fleet
	fleetSync *fleetSync
	events    events
	limiter   limit.Limiter
	closers   []func()
	mu        sync.Mutex // serialises reloads and trust/deny changes
	lns       []net.Listener
	ctlLn     net.Listener
	adminLn   net.Listener
	started   time.Time
	accepted  atomic.Int64

	acceptFailed atomic.Bool                  // since the stress sampler last looked
	stressNow    atomic.Pointer[StressStatus] // nil: not under stress

	resolver *resolve.Resolver // clients' names for the console; nil with WithVerifier
	hold     *hold.Holder      // the greeting pause's sessions, while Run runs
}

// Option changes how New builds a server.
type Option func(*options)

type options struct {
	verifier  admit.Verifier
	noMetrics bool
}

// WithoutMetrics builds a server that counts nothing (no /metrics, no
// figures in status): for measuring what the counting costs.
func WithoutMetrics() Option {
	return func(o *options) { o.noMetrics = true }
}

// WithVerifier makes admission take clients' reverse-DNS names from v
// instead of from a resolver built from the configuration's resolver
// setting: a server built in process (a fuzz test, an embedding program)
// then asks no DNS server.
func WithVerifier(v admit.Verifier) Option {
	return func(o *options) { o.verifier = v }
}

// New builds a server from cfg. Nothing listens until Listen.
func New(cfg *config.Config, logger *slog.Logger, opts ...Option) (*Server, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{log: logger, started: time.Now()}
	if !o.noMetrics {
		s.metrics = metrics.New()
	}
	s.cfg.Store(cfg)
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()

	l, err := load(cfg)
	if err != nil {
		return nil, err
	}
	for _, w := range l.warnings {
		logger.Warn(w)
	}
	res := o.verifier
	if res == nil {
		r, err := resolve.New(resolve.Config{Server: cfg.Resolver, OnCache: s.metrics.DNSCache, OnLookup: s.metrics.DNSLookup}, logger)
		if err != nil {
			return nil, err // says "resolve: ..." itself
		}
		res, s.resolver = r, r
	}
	if cfg.Fleet.Shared() {
		if s.redis, err = redisconn.New(cfg.Fleet.RedisOptions()); err != nil {
			return nil, fmt.Errorf("[fleet]: %w", err)
		}
		// First in, so last out: its users close before it.
		s.closers = append(s.closers, func() { s.redis.Close() })
	}
	if s.limiter, err = newLimiter(cfg, s.redis, logger, s.metrics, &s.closers); err != nil {
		return nil, err
	}
	if s.rep, err = s.newReputation(cfg); err != nil {
		return nil, err
	}
	if s.fleet, err = newFleet(cfg, s.redis, logger); err != nil {
		return nil, err
	}
	s.fleetSync = &fleetSync{s: s, shared: map[netip.Prefix]bool{}}
	if s.fleet != nil {
		s.metrics.GaugeFunc("mxguard_fleet_shared", "1 while this node shares trust, deny and bans with the fleet through Redis, 0 while Redis is unreachable and it decides alone.", func() float64 {
			if s.fleetSync.down.Load() {
				return 0
			}
			return 1
		})
	}
	s.events = events{m: s.metrics, rep: s.rep}
	var rep admit.Reputation // a nil *Book is not a nil interface
	switch {
	case s.rep != nil && s.fleet != nil:
		rep = fleetBook{s.rep, s.fleet}
	case s.rep != nil:
		rep = s.rep
	}
	deps := admit.Deps{Limiter: s.limiter, DNS: res, Events: s.events, Reputation: rep, Log: logger}
	lists, err := newDNSBL(cfg, s.redis, logger, s.metrics, &s.closers)
	if err != nil {
		return nil, err
	}
	if lists != nil {
		deps.Lists = lists
	}
	s.admit = admit.New(l.admit, deps)

	if s.spool, err = spool.Open(filepath.Join(cfg.DataDir, "spool"), logger, spool.WithFsyncObserver(s.metrics.Fsync)); err != nil {
		return nil, err // says "spool: ..." itself
	}
	var d deliver.Deliverer
	if cfg.Delivery.Relay != "" {
		r, err := deliver.NewRelay(cfg.Delivery.Relay, cfg.Hostname, relayTimeouts(&cfg.Timeouts), logger,
			deliver.WithPool(relayConnections, relayIdle))
		if err != nil {
			return nil, err // says "relay ..." itself
		}
		s.closers = append(s.closers, r.Close)
		d = r
		if cfg.Delivery.Verify == config.VerifyProbe {
			if s.verify, err = newProber(cfg, r, s.redis, logger, &s.closers); err != nil {
				return nil, err
			}
		}
	} else {
		s.maildir = deliver.NewMaildir(filepath.Join(cfg.DataDir, "mail"), cfg.Hostname, cfg.LocalDomains, logger)
		s.maildir.OnFsync = s.metrics.Fsync
		d = s.maildir
	}
	s.queue = deliver.NewQueue(s.spool, d, deliver.QueueConfig{
		Hostname:      cfg.Hostname,
		QueueLifetime: cfg.Delivery.QueueLifetime,
		Workers:       DeliveryWorkers,
		Metrics:       s.metrics,
	}, logger)
	s.metrics.GaugeFunc(metrics.SpoolMessages, "Messages in the spool, waiting for delivery (relay) or for a bounce to go out.", func() float64 {
		ids, _ := s.spool.Queued()
		return float64(len(ids))
	})
	s.metrics.GaugeFunc(metrics.SpoolOldest, "Age of the oldest message in the spool; 0 when it is empty.", func() float64 {
		ids, _ := s.spool.Queued() // sorted by ID, and IDs by time
		if len(ids) == 0 {
			return 0
		}
		t, _ := spool.IDTime(ids[0])
		return time.Since(t).Seconds()
	})
	if s.rep != nil {
		s.metrics.GaugeFunc(metrics.BansNow, "Clients and networks banned now ([reputation] ban_below).", func() float64 {
			return float64(len(s.rep.Bans()))
		})
	}
	if s.maildir != nil {
		s.store = maildirStore{s.maildir}
	} else {
		s.store = newSpoolStore(s.spool, s.queue)
	}
	s.envelope.Store(s.envelopePolicy(cfg, l.recipients))

	s.hold = hold.New()
	s.smtp = smtpd.NewServer(s.smtpConfig(cfg, l.tls))
	ok = true
	return s, nil
}

// Verification cache and connection bounds that have no key of their own.
const (
	// verifyCacheSize is how many verdicts this node remembers (about
	// 100 bytes each); a dictionary attack pushes out the oldest.
	verifyCacheSize = 100_000
	// probeIdle is how long an unused connection to the downstream is
	// kept for the next probe: below a busy Postfix's 10 s smtpd_timeout.
	probeIdle = 5 * time.Second
	// relayConnections bounds the delivery connections kept open to the
	// relay: one for each delivery worker, which uses one at a time, so
	// that no worker waits for another's connection and a downstream's
	// per-client limit (Postfix's smtpd_client_connection_count_limit,
	// 50) is never reached.
	relayConnections = DeliveryWorkers
	// relayIdle is how long an unused delivery connection is kept, for the
	// same reason as probeIdle.
	relayIdle = probeIdle
)

// newProber builds the recipient verification of [delivery] verify =
// "probe": a Prober on the relay, its verdicts cached in this process, or
// in the fleet's Redis (rc, when not nil) for the whole fleet.
func newProber(cfg *config.Config, r *deliver.Relay, rc redis.UniversalClient, logger *slog.Logger, closers *[]func()) (policy.Verifier, error) {
	c, err := newCache(cfg, rc, verifyCacheSize, logger, closers)
	if err != nil {
		return nil, err
	}
	p, err := deliver.NewProber(r, deliver.ProberConfig{
		MaxInFlight: cfg.Delivery.VerifyMaxProbes,
		PositiveTTL: cfg.Delivery.VerifyPositiveTTL,
		NegativeTTL: cfg.Delivery.VerifyNegativeTTL,
		IdleTimeout: probeIdle,
	}, c, logger)
	if err != nil {
		return nil, err
	}
	*closers = append(*closers, p.Close)
	return prober{p}, nil
}

// newCache makes a cache of size entries in this process or, with the
// fleet's Redis (rc), one shared by the fleet with that as its fallback.
func newCache(cfg *config.Config, rc redis.UniversalClient, size int, logger *slog.Logger, closers *[]func()) (cache.Cache, error) {
	mem, err := cache.NewMemory(size, nil)
	if err != nil {
		return nil, err
	}
	if rc == nil {
		return mem, nil
	}
	shared, err := cache.NewRedis(cache.RedisOptions{Client: rc, KeyPrefix: cfg.Fleet.KeyPrefix}, mem, logger)
	if err != nil {
		return nil, fmt.Errorf("fleet redis: %w", err)
	}
	*closers = append(*closers, func() { shared.Close() })
	return shared, nil
}

// prober puts the Prober's verdicts into the policy's terms.
type prober struct{ p *deliver.Prober }

func (p prober) Verify(ctx context.Context, addr string) policy.Verification {
	v := p.p.Verify(ctx, addr)
	st := policy.Unverified
	switch v.Status {
	case deliver.Valid:
		st = policy.Valid
	case deliver.Invalid:
		st = policy.Invalid
	}
	return policy.Verification{Status: st, Detail: v.Reply}
}

// newLimiter builds the per-client counters: in this process, or in the
// fleet's Redis (rc, when not nil) with this process's as the fallback.
func newLimiter(cfg *config.Config, rc redis.UniversalClient, logger *slog.Logger, m *metrics.Metrics, closers *[]func()) (limit.Limiter, error) {
	mem := limit.NewMemory(nil)
	*closers = append(*closers, mem.Close)
	if rc == nil {
		m.LimiterState(metrics.LimiterLocal)
		return mem, nil
	}
	r, err := limit.NewRedis(limit.RedisOptions{Client: rc, KeyPrefix: cfg.Fleet.KeyPrefix}, logger)
	if err != nil {
		return nil, fmt.Errorf("fleet redis: %w", err)
	}
	*closers = append(*closers, r.Close)
	policy := limit.PolicyLocal
	if cfg.Fleet.OnRedisError == "tempfail" {
		policy = limit.PolicyTempfail
	}
	m.LimiterState(metrics.LimiterRedis)
	return limit.NewFailover(r, mem, policy, logger, limit.WithHooks(func(down bool) {
		if down {
			m.LimiterState(metrics.LimiterFallback)
		} else {
			m.LimiterState(metrics.LimiterRedis)
		}
	}, m.RedisError)), nil
}

func (s *Server) smtpConfig(cfg *config.Config, tc *tls.Config) smtpd.Config {
	t := cfg.Timeouts.ServerSide()
	return smtpd.Config{
		Hostname:        cfg.Hostname,
		TLS:             tc,
		MaxMessageSize:  cfg.Limits.MaxMessageSize,
		MaxRcpts:        cfg.Limits.MaxRcptsPerMessage,
		BadRcptThrottle: cfg.Limits.BadRcptThrottle,
		MaxBadRcpts:     cfg.Limits.MaxBadRcpts,
		MaxErrors:       cfg.Limits.HardErrorLimit,
		MaxJunk:         cfg.Limits.JunkCommandLimit,
		MaxSessionBytes: cfg.Limits.MaxSessionBytes,
		MaxSessionTime:  cfg.Limits.MaxSessionTime,
		Logger:          s.log,
		Observer:        s.events,
		Holder:          s.hold,
		Timeouts: smtpd.Timeouts{
			Command: t.Command, Helo: t.Helo, Mail: t.Mail, Rcpt: t.Rcpt,
			DataInit: t.DataInit, DataBlock: t.DataBlock, DataFinal: t.DataFinal,
			Rset: t.Rset, Quit: t.Quit, Misc: t.Misc, StartTLS: t.StartTLS,
		},
	}
}

func relayTimeouts(all *config.Timeouts) deliver.Timeouts {
	t := all.RelaySide()
	return deliver.Timeouts{
		Connect: t.Connect, Initial: t.Initial, Helo: t.Helo, Lhlo: t.LHLO, StartTLS: t.StartTLS,
		Mail: t.Mail, Rcpt: t.Rcpt, DataInit: t.DataInit, DataBlock: t.DataBlock, DataFinal: t.DataFinal,
		Quit: t.Quit,
	}
}

// Listen opens the SMTP listeners and the control socket, so that an
// address in use is reported before Run.
func (s *Server) Listen() error {
	cfg := s.cfg.Load()
	// No TCP keep-alive: its setsockopt calls cost every connection, also
	// the ones a flood gets refused at once, and the per-phase timeouts
	// end a session with a vanished client anyway.
	lc := net.ListenConfig{KeepAlive: -1}
	for _, addr := range cfg.Listen {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return err
		}
		s.lns = append(s.lns, ln)
	}
	if cfg.Admin.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			return cfg.KeyError("admin.listen", err)
		}
		s.adminLn = ln
	}
	if cfg.Control != "" {
		ln, err := control.Listen(cfg.Control)
		if err != nil {
			return err // names the control socket and its path
		}
		s.ctlLn = ln
	}
	return nil
}

// Ready reports whether the server can take mail now (/readyz).
func (s *Server) Ready() []admin.Check {
	cfg := s.cfg.Load()
	listening := admin.Check{Name: "listening", OK: len(s.lns) > 0 && !s.smtp.Draining()}
	if listening.OK {
		listening.Detail = fmt.Sprint(s.Addrs())
	} else {
		listening.Detail = "not listening, or stopping"
	}
	checks := []admin.Check{listening}
	spoolCheck := admin.Check{Name: "spool", OK: true, Detail: "writable"}
	if err := s.spool.Writable(); err != nil {
		spoolCheck.OK, spoolCheck.Detail = false, err.Error()
	}
	checks = append(checks, spoolCheck)
	if cfg.Fleet.Shared() {
		state := s.metrics.Summary(0, 0).Limiter
		c := admin.Check{Name: "redis", OK: true, Detail: "limits counted in Redis"}
		if state == metrics.LimiterFallback {
			c.Detail = "Redis unreachable: counting on this node meanwhile"
			if cfg.Fleet.OnRedisError == config.OnRedisErrorTempfail {
				c.OK, c.Detail = false, "Redis unreachable and on_redis_error = \"tempfail\": every client gets 421"
			}
		}
		checks = append(checks, c)
	}
	return checks
}

// Addrs are the addresses the server listens on.
func (s *Server) Addrs() []net.Addr {
	var out []net.Addr
	for _, ln := range s.lns {
		out = append(out, ln.Addr())
	}
	return out
}

// Run serves until ctx is done, then stops gracefully: no new
// connections, idle sessions told 421, sessions in a transaction given
// ShutdownGrace, delivery attempts under way finished.
func (s *Server) Run(ctx context.Context) error {
	if s.lns == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	defer s.close()
	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()
	var wg sync.WaitGroup
	queueCtx, stopQueue := context.WithCancel(context.Background())
	defer stopQueue()
	queueDone := make(chan error, 1)
	go func() { queueDone <- s.queue.Run(queueCtx) }()
	if s.adminLn != nil {
		wg.Go(func() {
			if err := admin.Serve(ctx, s.adminLn, admin.Handler(s.metrics.Gatherer(), s, s.consoleHandler()), s.log); err != nil {
				s.log.Error("admin listener", "err", err.Error())
			}
		})
		s.log.Info("admin listening", "addr", s.adminLn.Addr().String())
	}
	if s.ctlLn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			control.Serve(ctx, s.ctlLn, s.cfg.Load().Timeouts.Control, s, s.log)
		}()
	}
	wg.Go(func() { s.watchStress(ctx, time.Second) })
	if s.fleet != nil {
		ready := make(chan struct{})
		wg.Go(func() { s.runFleet(ctx, ready) })
		select { // the fleet's bans before the first client, if Redis answers at once
		case <-ready:
		case <-time.After(fleetReadyWait):
		}
	}
	wg.Go(func() { s.keepTraffic(hard, time.Second, trafficSave) })
	wg.Go(func() {
		// Without it, each session in the greeting pause waits in its
		// own goroutine, as it did before there was a holder.
		if err := s.hold.Run(hard); err != nil {
			s.log.Warn("greeting pause: sessions wait in a goroutine each", "err", err.Error())
		}
	})
	for _, ln := range s.lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.acceptLoop(ctx, hard, ln)
		}()
		s.log.Info("listening", "addr", ln.Addr().String())
	}
	if s.maildir != nil {
		// Once listening, and in the background: the walk reads one tmp/
		// per mailbox, 55-65 µs each with a warm cache on the development
		// machine (deliver.BenchmarkCleanTmp), so seconds for 100,000
		// mailboxes and more with a cold cache, while what it removes
		// costs nothing but space meanwhile (a reader never sees tmp/).
		// Deliveries can run beside it: the files this process writes
		// carry its Maildir's token and are left alone.
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.maildir.CleanTmp(ctx, time.Now())
		}()
	}
	<-ctx.Done()
	s.log.Info("shutting down", "sessions", s.smtp.Sessions())
	for _, ln := range s.lns {
		ln.Close()
	}
	grace, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	err := s.smtp.Shutdown(grace)
	cancelHard()
	wg.Wait()
	stopQueue()
	if qerr := <-queueDone; qerr != nil && !errors.Is(qerr, context.Canceled) {
		s.log.Error("delivery queue", "err", qerr.Error())
	}
	s.log.Info("stopped")
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // sessions were cut after the grace period; their mail was not yet accepted
	}
	return err
}

func (s *Server) close() {
	if s.adminLn != nil {
		s.adminLn.Close() // when Run never served it
	}
	if s.spool != nil {
		s.spool.Close()
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// acceptLoop hands every connection to its own goroutine at once: the
// loop itself never waits on admission, DNS or a throttle.
func (s *Server) acceptLoop(ctx, hard context.Context, ln net.Listener) {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.acceptFailed.Store(true) // the server falls behind: stress
			// Out of file descriptors and the like: wait and try again
			// rather than spin (as net/http does).
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err.Error(), "retry_in", backoff.String())
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		s.accepted.Add(1)
		s.metrics.ConnAccepted()
		go s.ServeConn(hard, nc)
	}
}

// ServeConn runs admission and then the SMTP session on nc, a connection
// the caller accepted, until the session ends or ctx is done; it closes
// nc. While Run runs, a session in the greeting pause is held without its
// goroutine (internal/hold) and ServeConn returns before it ends. The accept loop calls it for every connection; a test can hand it a
// net.Conn of its own, whose RemoteAddr must be a *net.TCPAddr.
//
// A connection from a proxy_protocol_from network first has its PROXY
// header read (here, in the connection's goroutine, bounded by
// proxyhdr.Timeout), and from then on the client the header names is the
// client: admission, the session, its log lines and its Received: header
// never see the load balancer's address.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) {
	ta, ok := nc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		nc.Close()
		return
	}
	// No text round trip on the accept path; a dual-stack listener gives
	// IPv4 clients as ::ffff:a.b.c.d, which logs and limits want plain.
	ap := ta.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	proxied := false
	if inAny(s.cfg.Load().ProxyProtocolFrom, ap.Addr()) {
		pc, h, err := proxyhdr.Read(ctx, nc, proxyhdr.Timeout)
		if err != nil {
			if ctx.Err() == nil {
				s.refuseProxy("", ap.Addr(), err.Error())
			}
			nc.Close()
			return
		}
		nc, ap, proxied = pc, h.Client, true
	}

	d := s.admit.Admit(ctx, ap.Addr())
	if d.Reject != nil {
		defer d.Release()
		// A reply of a line or a few into a fresh socket's empty send
		// buffer (16 KiB at least) never waits, so no write deadline: a
		// timer set and stopped for every refused connection of a flood.
		// (The buffer escapes to the heap through the interface call: one
		// allocation instead of three.)
		var buf [128]byte // room for the usual one-line refusal
		nc.Write(d.Reject.AppendTo(buf[:0]))
		nc.Close()
		return
	}
	// A client with nothing to wait for but its greeting waits without
	// its session or goroutine (see smtpd.HoldGreeting): the cheapest
	// state a flood's connections can be in.
	if !d.ListsAsked() && s.smtp.HoldGreeting(nc, ap.Addr(), d.GreetPause, func(nc net.Conn, held smtpd.Held) {
		if nc == nil {
			d.Release() // the client is lost
			return
		}
		s.serveSession(ctx, nc, ap, proxied, d, held)
	}) {
		return
	}
	s.serveSession(ctx, nc, ap, proxied, d, smtpd.Held{})
}

// serveSession runs the SMTP session of an admitted client, after the
// greeting pause held before it, if one was.
func (s *Server) serveSession(ctx context.Context, nc net.Conn, ap netip.AddrPort, proxied bool, d *admit.Decision, held smtpd.Held) {
	// After admission, so that a flood turned away there costs nothing
	// more: a PROXY header from this client is refused wherever it comes.
	nc = proxyhdr.Guard(nc, func(int) {
		why := "PROXY protocol header from an address not in proxy_protocol_from"
		if proxied {
			why = "PROXY protocol header from a client behind the proxy"
		}
		s.refuseProxy(d.Host, ap.Addr(), why)
	})
	cfg := s.cfg.Load()
	x := &session{
		log:     s.log,
		metrics: s.metrics,
		events:  s.events,
		cfg:     cfg,
		pol:     s.envelope.Load(),
		store:   s.store,
		newID:   s.spool.NewID,
		probe:   cfg.Timeouts.RelaySide().Rcpt,
		release: d.Release,
		client: policy.Client{Addr: ap.Addr(), Host: d.Host, Trusted: d.Trusted,
			Relay: d.Relay, Discard: d.Discard},
	}
	info := smtpd.ConnInfo{
		Remote:     ap,
		Host:       d.Host,
		GreetPause: d.GreetPause,
		Defer:      d.Defer,
		Tarpit:     tarpit{d, s.metrics},
		Held:       held,
	}
	if d.ListsAsked() {
		start := time.Now()
		info.Screen = func(ctx context.Context) (*reply.Reply, bool) {
			ctx, cancel := context.WithDeadline(ctx, start.Add(cfg.DNSBL.Timeout))
			defer cancel()
			l, _ := s.admit.Listing(ctx, d, s.stressNow.Load() != nil)
			if l.RejectRcpt != nil {
				x.client.Listed, x.client.Lists = l.RejectRcpt, l.Sites()+", score "+strconv.Itoa(l.Result.Score)
			}
			return l.Reject, l.Allowlisted
		}
	}
	s.smtp.ServeConn(ctx, nc, info, x)
}

// tarpit is the session's tarpit, counted.
type tarpit struct {
	d *admit.Decision
	m *metrics.Metrics
}

func (t tarpit) Delay() time.Duration {
	d := t.d.Delay()
	if d > 0 {
		t.m.Tarpit(d)
	}
	return d
}

// newReputation makes the clients' score book of [reputation], or none
// when neither the tarpit nor bans are on.
func (s *Server) newReputation(cfg *config.Config) (*reputation.Book, error) {
	r := &cfg.Reputation
	if r.TarpitBelow == 0 && r.BanBelow == 0 {
		return nil, nil
	}
	return reputation.New(reputation.Config{
		Points:       reputation.Points(r.PregreetPoints, r.ProtocolErrorPoints, r.UnknownUserPoints),
		TarpitBelow:  r.TarpitBelow,
		TarpitStep:   r.TarpitStep,
		TarpitMax:    r.TarpitMax,
		BanBelow:     r.BanBelow,
		BanTime:      r.BanTime,
		ForgiveAfter: r.ForgiveAfter,
		MaxClients:   r.MaxClients,
	}, nil, func(a netip.Addr) bool { return s.admit.Policy().IsTrusted(a) }, func(b reputation.Ban) {
		s.metrics.Ban()
		s.log.Info(fmt.Sprintf("banning %s until %s: its score fell to the ban level (last: %s)",
			b.Prefix, b.Expires.UTC().Format(time.RFC3339), b.Reason), "ip", b.Prefix.Addr().String(), "reason", reason.Banned)
		if s.fleet != nil {
			b.Node = s.fleet.Node()
			go s.share(entryOf(b)) // off the session's path
		}
	})
}

// events is where admission, the protocol and the envelope policy report
// refusals: the metrics, and the clients' scores.
type events struct {
	m   *metrics.Metrics
	rep *reputation.Book
}

func (e events) Refused(why reason.Reason, client netip.Addr, host string) {
	e.m.Refused(why, client, host)
	if e.rep != nil {
		e.rep.Penalize(client, why, 0)
	}
}

func (e events) ThrottleStall()                                 { e.m.ThrottleStall() }
func (e events) SessionStart(client netip.Addr, host string)    { e.m.SessionStart(client, host) }
func (e events) SessionEnd(client netip.Addr)                   { e.m.SessionEnd(client) }
func (e events) GreetPause(delta int)                           { e.m.GreetPause(delta) }
func (e events) Command(verb string, code int, d time.Duration) { e.m.Command(verb, code, d) }

// refuseProxy writes the one line of a connection closed for its PROXY
// header, and counts it. addr is the connection's own address when the
// header was wanted but not taken (there is no other), else the client's;
// host is its confirmed name, "" when unknown.
func (s *Server) refuseProxy(host string, addr netip.Addr, why string) {
	s.metrics.Refused(reason.ProxyProtocol, addr, host)
	if host == "" {
		host = "unknown"
	}
	s.log.Info("rejecting connection from "+host+" ["+addr.String()+"]: "+why,
		"ip", addr.String(), "reason", reason.ProxyProtocol)
}

func inAny(nets []netip.Prefix, addr netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}

// envelopePolicy is the envelope policy for cfg: the files it names
// (read by load) and the parts of this server it calls on.
func (s *Server) envelopePolicy(cfg *config.Config, rcpts *recipients.Table) *policy.Policy {
	p := &policy.Policy{
		LocalDomains: cfg.LocalDomains,
		Access:       s.admit.Policy().Access,
		DelayChecks:  cfg.DelayChecks,
		Relay:        s.maildir == nil, // as started: [delivery] changes wait for a restart
		Recipients:   rcpts,
		CatchAll:     cfg.Recipients.CatchAll,
		Verify:       s.verify,
	}
	if md := s.maildir; md != nil {
		p.Mailbox = func(addr string) error { _, err := md.Path(addr); return err }
	}
	return p
}

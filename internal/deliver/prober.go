package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/mxguard/mxguard/internal/cache"
)

// A Prober asks the downstream server, while a client's RCPT is waiting,
// whether it would take mail for an address, so that mxguard can refuse a
// recipient the downstream does not know instead of accepting the message
// and bouncing it later to a sender who is, for spam, forged (backscatter).
//
// A probe is MAIL FROM:<>, RCPT TO:<addr>, RSET: no DATA is ever sent, so
// no message is created, and the commands are the same in SMTP and LMTP.
// Connections are kept open between probes, as Postfix's verify(8) does
// through its connection cache, and closed after IdleTimeout unused.
//
// A Prober is bounded so that a dictionary attack cannot turn mxguard into
// a flood against its own downstream: at most MaxInFlight probes, each on
// one connection, run at once, and a probe that finds no free slot waits
// for one only as long as its caller does. Concurrent probes of one address
// are one probe. Verdicts the downstream gave are cached: Valid for
// PositiveTTL, Invalid for NegativeTTL, and Unverified never, so that a
// downstream's hiccup is not remembered.
type Prober struct {
	relay  *Relay
	cfg    ProberConfig
	cache  cache.Cache // nil: nothing is cached
	logger *slog.Logger

	slots chan struct{} // a token per probe running
	group singleflight.Group

	ctx    context.Context // ends at Close, interrupting every probe
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reaper and the probes running

	mu     sync.Mutex
	idle   []*probeConn // least recently used first
	closed bool
	down   bool // the last probe could not reach the downstream
}

// ProberConfig bounds a Prober. Every field must be set, except the TTLs:
// a zero TTL caches nothing of its kind.
type ProberConfig struct {
	// MaxInFlight is the number of probes, and so of connections to the
	// downstream, that may exist at once.
	MaxInFlight int
	// PositiveTTL is how long a Valid verdict is cached; NegativeTTL an
	// Invalid one. They are separate, as in Postfix's verify(8): an
	// address the downstream refuses may be created soon, one it knows is
	// rarely deleted.
	PositiveTTL, NegativeTTL time.Duration
	// IdleTimeout is how long a connection is kept open unused. It should
	// be well below the downstream's own idle timeout (Postfix's
	// smtpd_timeout is 300s, but 10s when it is under stress): a
	// connection the downstream closed costs the next probe a second
	// connect.
	IdleTimeout time.Duration
}

// Limits on one connection's use, under the defaults of Postfix's smtpd,
// which counts each RSET as a "junk command" and each refused RCPT as an
// error, and never forgets either on a connection that delivers nothing.
const (
	// Past smtpd_junk_command_limit (100) each RSET counts as an error.
	maxProbesPerConn = 50
	// Past smtpd_soft_error_limit (10) every reply is delayed by
	// smtpd_error_sleep_time (1s); at smtpd_hard_error_limit (20) the
	// server hangs up. Under stress both limits are 1, which the
	// downstream then tells us with a 421, and the connection is dropped.
	maxRefusalsPerConn = 5
	// quitWrite bounds the QUIT written, without waiting for its reply,
	// when a kept connection is closed.
	quitWrite = time.Second
	// keyPrefix is the namespace of the Prober's cache keys.
	keyPrefix = "verify:"
)

// probeConn is a connection with its use so far.
type probeConn struct {
	*conn
	lastUse  time.Time
	probes   int
	refusals int
	reused   bool // taken from the idle list, not just opened
}

// VerifyStatus is what the downstream said of an address.
type VerifyStatus int

// The zero VerifyStatus is Unverified, so that a Verdict left unset never
// counts as an answer.
const (
	// Unverified: no answer to go by (a 4xx reply, no connection, no
	// reply in time, no free probe slot in time, the Prober closed).
	Unverified VerifyStatus = iota
	// Valid: the downstream accepted RCPT (2xx).
	Valid
	// Invalid: the downstream refused RCPT for good (5xx), or the address
	// cannot be sent to it at all.
	Invalid
)

func (s VerifyStatus) String() string {
	switch s {
	case Unverified:
		return "unverified"
	case Valid:
		return "valid"
	case Invalid:
		return "invalid"
	}
	return "VerifyStatus(" + strconv.Itoa(int(s)) + ")"
}

// Verdict is the outcome of Verify.
type Verdict struct {
	Status VerifyStatus
	// Reply is the downstream's reply to RCPT on one line, or, when there
	// is none, what went wrong phrased as a reply ("451 4.4.1 connect to
	// smtp://...: connection refused"), for logs.
	Reply string
	// Cached is true when the verdict came from the cache, not a probe.
	Cached bool
}

// NewProber returns a Prober that probes through relay's downstream, with
// relay's timeouts, and caches verdicts in c (nil: no cache). Close
// releases it. A nil logger discards.
func NewProber(relay *Relay, cfg ProberConfig, c cache.Cache, logger *slog.Logger) (*Prober, error) {
	switch {
	case relay == nil:
		return nil, errors.New("prober: no relay")
	case cfg.MaxInFlight < 1:
		return nil, fmt.Errorf("prober: max in flight %d, want at least 1", cfg.MaxInFlight)
	case cfg.IdleTimeout <= 0:
		return nil, errors.New("prober: idle timeout is not set")
	case cfg.PositiveTTL < 0 || cfg.NegativeTTL < 0:
		return nil, errors.New("prober: negative cache TTL")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prober{
		relay:  relay,
		cfg:    cfg,
		cache:  c,
		logger: logger,
		slots:  make(chan struct{}, cfg.MaxInFlight),
		ctx:    ctx,
		cancel: cancel,
	}
	p.wg.Add(1)
	go p.reap()
	return p, nil
}

// Close interrupts the probes running, closes every connection and waits
// until the Prober's goroutines have ended. Verify calls after Close
// return Unverified, or a cached verdict. The cache is the caller's.
func (p *Prober) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	p.cancel()
	for _, c := range idle {
		c.quit()
	}
	p.wg.Wait()
}

// Verify asks the downstream about addr, an address as given in RCPT
// without its angle brackets. ctx bounds the whole call, waiting for a
// probe slot included; it should carry the deadline the client's RCPT can
// wait (without one, the relay's Rcpt timeout bounds the probe). The
// probe's own waits are the relay's Timeouts, clamped by that deadline.
//
// Cache keys fold the domain to lower case (ASCII only) but keep the local
// part as given, since the downstream may tell local parts apart by case.
func (p *Prober) Verify(ctx context.Context, addr string) Verdict {
	if addr == "" || !validAddr(addr) {
		// It cannot be put in RCPT without changing it; the relay would
		// refuse it the same way.
		return Verdict{Status: Invalid, Reply: localReply(553, "5.1.3", "unusable recipient address")}
	}
	if err := ctx.Err(); err != nil {
		return unverified("4.4.7", "verify: "+err.Error())
	}
	key := keyPrefix + foldDomain(addr)
	if p.cache != nil {
		if s, ok := p.cache.Get(ctx, key); ok {
			if v, ok := decodeVerdict(s); ok {
				v.Cached = true
				return v
			}
		}
	}
	ch := p.group.DoChan(key, func() (any, error) {
		return p.shared(ctx, key, addr), nil
	})
	select {
	case res := <-ch:
		return res.Val.(Verdict)
	case <-ctx.Done():
		return unverified("4.4.7", "verify: no verdict in time: "+ctx.Err().Error())
	}
}

// shared is the probe that every concurrent Verify of one address waits
// for. It runs until the deadline of the caller that started it, even if
// that caller gives up sooner (a client that hangs up), so that the others
// still get its verdict and the cache its result.
func (p *Prober) shared(ctx context.Context, key, addr string) Verdict {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return unverified("4.3.0", "verify: prober closed")
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()

	var pctx context.Context
	var cancel context.CancelFunc
	if dl, ok := ctx.Deadline(); ok {
		pctx, cancel = context.WithDeadline(p.ctx, dl)
	} else {
		pctx, cancel = context.WithTimeout(p.ctx, p.relay.t.Rcpt)
	}
	defer cancel()
	start := time.Now()
	v := p.probe(pctx, addr)
	if p.logger.Enabled(pctx, slog.LevelDebug) {
		p.logger.Debug("verify: probe", "rcpt", addr, "verdict", v.Status.String(), "reply", v.Reply, "took", time.Since(start))
	}

	if p.cache != nil {
		switch v.Status {
		case Valid:
			p.cache.Set(p.ctx, key, encodeVerdict(v), p.cfg.PositiveTTL)
		case Invalid:
			p.cache.Set(p.ctx, key, encodeVerdict(v), p.cfg.NegativeTTL)
		}
	}
	return v
}

// probe takes a slot and a connection and runs one probe. A kept
// connection that fails before RCPT was sent was most likely closed by the
// downstream while idle; then, and only then, the probe is tried again on
// a new connection. Once RCPT has gone out, repeating it could count
// twice against the downstream's limits.
func (p *Prober) probe(ctx context.Context, addr string) Verdict {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return unverified("4.4.5", "verify: no free probe slot in time")
	}
	defer func() { <-p.slots }()
	if err := ctx.Err(); err != nil {
		return unverified("4.4.5", "verify: no free probe slot in time")
	}

	c, err := p.get(ctx)
	if err != nil {
		p.setDown(err)
		return unverified("4.4.1", err.Error())
	}
	v, keep, rcptSent, err := p.try(c, addr)
	if err != nil && c.reused && !rcptSent && ctx.Err() == nil {
		p.logger.Debug("verify: kept connection failed, opening a new one", "relay", p.relay.url, "err", err)
		c.close()
		if c, err = p.open(ctx); err != nil {
			p.setDown(err)
			return unverified("4.4.1", err.Error())
		}
		v, keep, rcptSent, err = p.try(c, addr)
	}
	if err != nil {
		c.close()
		p.setDown(err)
		return v
	}
	p.setDown(nil)
	fit := c.unbind()
	if rcptSent {
		c.probes++
		if v.Status != Valid {
			c.refusals++
		}
	}
	switch {
	case !keep || !fit:
		c.close()
	case c.probes >= maxProbesPerConn || c.refusals >= maxRefusalsPerConn:
		c.quit()
	default:
		p.put(c)
	}
	return v
}

// try runs MAIL, RCPT and RSET on c. err is set when the connection
// failed (v is then Unverified); keep says whether c is fit for another
// probe; rcptSent whether RCPT may have reached the downstream.
func (p *Prober) try(c *probeConn, addr string) (v Verdict, keep, rcptSent bool, err error) {
	r := p.relay
	mail := "MAIL FROM:<>"
	if !isASCII(addr) {
		if _, ok := c.ext["SMTPUTF8"]; !ok {
			// As Relay.transaction would refuse the message.
			return Verdict{Status: Invalid, Reply: localReply(553, "5.6.7", r.url+" does not support SMTPUTF8, needed for this address")}, true, false, nil
		}
		mail += " SMTPUTF8"
	}
	fail := func(what string, err error) (Verdict, bool, bool, error) {
		err = fmt.Errorf("%s: %s: %w", r.url, what, err)
		return unverified("4.4.2", err.Error()), false, rcptSent, err
	}
	rep, err := c.cmd(r.t.Mail, mail)
	if err != nil {
		return fail("MAIL", err)
	}
	if rep.class() != 2 {
		// No verdict on the address; a downstream that refuses the null
		// sender is misconfigured, which the Debug line shows.
		return Verdict{Status: Unverified, Reply: rep.String()}, false, false, nil
	}
	// With PIPELINING, RSET goes out with RCPT (RFC 2920 §3.1): one round
	// trip fewer per probe.
	_, pipelining := c.ext["PIPELINING"]
	c.send(r.t.Rcpt, "RCPT TO:<"+addr+">")
	if pipelining {
		c.send(r.t.Mail, "RSET")
	}
	rcptSent = true
	if err := c.flush(); err != nil {
		return fail("sending RCPT", err)
	}
	if rep, err = c.read(r.t.Rcpt); err != nil {
		return fail("RCPT", err)
	}
	v = verdictOf(rep)
	if rep.code == 421 {
		return v, false, true, nil // the server is closing the connection
	}
	// The verdict is in; what follows only decides whether the connection
	// can be kept. RSET is bounded like MAIL, the command it stands in
	// front of.
	if !pipelining {
		c.send(r.t.Mail, "RSET")
		if err := c.flush(); err != nil {
			return v, false, true, nil
		}
	}
	rep, err = c.read(r.t.Mail)
	return v, err == nil && rep.class() == 2, true, nil
}

// get returns a connection bound to ctx: the most recently used idle one,
// or a new one.
func (p *Prober) get(ctx context.Context) (*probeConn, error) {
	p.mu.Lock()
	stale := p.expired(time.Now())
	var c *probeConn
	if n := len(p.idle); n > 0 {
		c = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	for _, s := range stale {
		s.quit()
	}
	if c == nil {
		return p.open(ctx)
	}
	c.reused = true
	c.bind(ctx)
	return c, nil
}

func (p *Prober) open(ctx context.Context) (*probeConn, error) {
	c, err := p.relay.open(ctx, "verify", true)
	if err != nil {
		return nil, err
	}
	return &probeConn{conn: c}, nil
}

// put keeps c for the next probe, or closes it if the Prober is closed.
func (p *Prober) put(c *probeConn) {
	p.mu.Lock()
	// Stamped under the lock, so that the list stays in order of use.
	c.lastUse = time.Now()
	if p.closed {
		p.mu.Unlock()
		c.quit()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// expired removes from the idle list, and returns, the connections unused
// for IdleTimeout at now. The list is in order of last use, so they are
// at its head. p.mu must be held.
func (p *Prober) expired(now time.Time) []*probeConn {
	cut := now.Add(-p.cfg.IdleTimeout)
	n := 0
	for n < len(p.idle) && !p.idle[n].lastUse.After(cut) {
		n++
	}
	if n == 0 {
		return nil
	}
	old := make([]*probeConn, n)
	copy(old, p.idle)
	rest := copy(p.idle, p.idle[n:])
	clear(p.idle[rest:])
	p.idle = p.idle[:rest]
	return old
}

// reap closes idle connections once they expire, so that they do not
// stay open when no probe comes to notice.
func (p *Prober) reap() {
	defer p.wg.Done()
	t := time.NewTicker(max(p.cfg.IdleTimeout/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			stale := p.expired(now)
			p.mu.Unlock()
			for _, c := range stale {
				c.quit()
			}
		}
	}
}

// setDown records whether the downstream could be reached (err == nil) and
// logs the changes, once each.
func (p *Prober) setDown(err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return // probes cut short by Close say nothing of the downstream
	}
	was := p.down
	p.down = err != nil
	p.mu.Unlock()
	switch {
	case err != nil && !was:
		p.logger.Warn("verify: downstream not answering probes; recipients stay unverified", "relay", p.relay.url, "err", err)
	case err == nil && was:
		p.logger.Info("verify: downstream answering probes again", "relay", p.relay.url)
	}
}

func verdictOf(rep reply) Verdict {
	st := Unverified
	switch rep.class() {
	case 2:
		st = Valid
	case 5:
		st = Invalid
	}
	return Verdict{Status: st, Reply: rep.String()}
}

func unverified(enhanced, msg string) Verdict {
	return Verdict{Status: Unverified, Reply: localReply(451, enhanced, msg)}
}

// A cached verdict is its status letter followed by the reply.
func encodeVerdict(v Verdict) string {
	if v.Status == Valid {
		return "V" + v.Reply
	}
	return "I" + v.Reply
}

func decodeVerdict(s string) (Verdict, bool) {
	switch {
	case strings.HasPrefix(s, "V"):
		return Verdict{Status: Valid, Reply: s[1:]}, true
	case strings.HasPrefix(s, "I"):
		return Verdict{Status: Invalid, Reply: s[1:]}, true
	}
	return Verdict{}, false
}

// foldDomain lower-cases the ASCII letters of addr's domain, the part
// after the last @.
func foldDomain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !strings.ContainsFunc(addr[at+1:], func(r rune) bool { return 'A' <= r && r <= 'Z' }) {
		return addr
	}
	b := []byte(addr)
	for i := at + 1; i < len(b); i++ {
		if 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/mxguard/mxguard/internal/hold"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reply"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts bound each wait for the client, one per protocol phase, with
// sendmail's Timeout.* names. A zero phase timeout means Command.
//
// Every field must be positive: the configuration resolves the phases an
// operator leaves at 0 (config.Timeouts.ServerSide), so that the protocol
// holds no second set of defaults; NewServer and SetConfig panic on a zero
// one, a mistake of the caller's code, not of the configuration.
type Timeouts struct {
	Command   time.Duration // a command wait of no phase below
	Helo      time.Duration // first command after the greeting
	Mail      time.Duration // waiting for MAIL
	Rcpt      time.Duration // waiting for RCPT
	DataInit  time.Duration // waiting for DATA (after a recipient was accepted)
	DataBlock time.Duration // each block of message data
	DataFinal time.Duration // the whole message body, from 354 to the final dot
	Rset      time.Duration // the command after RSET
	Quit      time.Duration // the command after a message was accepted
	Misc      time.Duration // the command after NOOP, VRFY, HELP and the like
	StartTLS  time.Duration // the TLS handshake
}

func (t Timeouts) check() error {
	for _, d := range []time.Duration{t.Command, t.Helo, t.Mail, t.Rcpt, t.DataInit, t.DataBlock,
		t.DataFinal, t.Rset, t.Quit, t.Misc, t.StartTLS} {
		if d <= 0 {
			return fmt.Errorf("smtpd: a timeout is not set: %+v", t)
		}
	}
	return nil
}

// Observer is told what the protocol does, for metrics. It is an
// interface so that the protocol core depends on no metrics library; its
// methods run on the session's goroutine and must be cheap. The client is
// named by its address and its confirmed host name (ConnInfo.Host, ""
// when it has none), so that the figures can be kept by client, network
// and provider.
type Observer interface {
	SessionStart(client netip.Addr, host string)
	SessionEnd(client netip.Addr)
	GreetPause(delta int) // +1 when a session enters the greeting pause, -1 when it leaves
	Command(verb string, code int, d time.Duration)
	Refused(why reason.Reason, client netip.Addr, host string)
}

type noObserver struct{}

func (noObserver) SessionStart(netip.Addr, string)           {}
func (noObserver) SessionEnd(netip.Addr)                     {}
func (noObserver) GreetPause(int)                            {}
func (noObserver) Command(string, int, time.Duration)        {}
func (noObserver) Refused(reason.Reason, netip.Addr, string) {}

// Config is what the protocol layer needs to know. It is read, never
// changed, by sessions: on reload the caller builds a new Server.
type Config struct {
	Hostname        string
	TLS             *tls.Config // nil: no STARTTLS
	MaxMessageSize  int64       // octets; 0 = no limit
	MaxRcpts        int         // max_rcpts_per_message; 0 = no limit
	BadRcptThrottle int         // bad_rcpt_throttle; 0 = off
	MaxBadRcpts     int         // max_bad_rcpts: refused RCPTs in a session before 421; 0 = no limit
	MaxErrors       int         // protocol errors before 421 (hard_error_limit); 0 = no limit
	MaxJunk         int         // NOOP, VRFY, EXPN, RSET, HELP before each more counts as an error (junk_command_limit); 0 = no limit
	Observer        Observer    // told what happens, for metrics; nil: nobody
	Timeouts        Timeouts
	Logger          *slog.Logger

	// MaxSessionBytes and MaxSessionTime bound a whole session, whatever
	// its phases' own limits, so that no client holds a session's share of
	// bandwidth and CPU for ever: octets read from the client (commands,
	// message data and TLS records alike) and time since ServeConn began.
	// Past either, the session gets 421 and is closed. 0 = no limit.
	MaxSessionBytes int64
	MaxSessionTime  time.Duration

	// Holder, when set, keeps sessions in the greeting pause without
	// their goroutines: ServeConn returns while such a session is held,
	// and it goes on in a new goroutine when the pause ends. nil: each
	// session waits in its own goroutine.
	Holder *hold.Holder
}

// Handler decides on one session's envelopes and stores its messages: the
// caller makes one per connection, holding whatever it decided about the
// client (go-smtp's Backend.NewSession → Session). Its methods run on the
// session's goroutine; a nil *reply.Reply from Mail or Rcpt means the
// default success reply.
type Handler interface {
	// Mail is called for a syntactically valid MAIL FROM. size is the SIZE
	// parameter (0 if absent), already checked against MaxMessageSize.
	Mail(s *Session, from Path, size int64) *reply.Reply
	// Rcpt is called for a syntactically valid RCPT TO within the limits.
	Rcpt(s *Session, to Path) *reply.Reply
	// Data reads the message body from r up to io.EOF and makes it durable
	// before returning its 250 reply (with the queue id). A nil reply is
	// not success: the client gets 451, as a message nobody said was
	// stored must not be acknowledged. Any other error from r means the
	// body is refused or the client is gone: the handler discards what it
	// has, and its reply is not used.
	Data(s *Session, r io.Reader) *reply.Reply
	// Reset is called when the transaction ends: RSET, HELO/EHLO,
	// STARTTLS, a new MAIL after DATA, and the end of DATA whatever its
	// outcome.
	Reset(s *Session)
	// Close is called once when the session is over.
	Close(s *Session)
}

// ConnInfo is what the caller decided about the connection before the
// protocol starts.
type ConnInfo struct {
	Remote     netip.AddrPort
	Host       string        // forward-confirmed reverse-DNS name, "" if none
	GreetPause time.Duration // hold the greeting this long; 0 = none
	Defer      *reply.Reply  // when set, every MAIL and RCPT gets this reply
	Tarpit     Tarpit        // when set, holds each batch of replies for its Delay
	// Screen, when set, is asked before the greeting for a verdict that
	// comes in while it is held (the DNS lists, asked at accept). It
	// waits within its own bound, and says whether to refuse the client
	// instead of greeting it (the reply is sent, the connection closed),
	// or to let it pass: the rest of the greeting pause, and its test of
	// a client that talks first, are skipped.
	Screen func(ctx context.Context) (reject *reply.Reply, pass bool)

	// Held is the greeting pause HoldGreeting held before the session,
	// for the session to judge as its own.
	Held Held
}

// Held is how a greeting pause held before its session ended.
type Held struct {
	Result hold.Result // 0: none was held
	Since  time.Time   // when it began: the session's time counts from there
}

// Tarpit says how long to hold the replies to a client now (its score may
// fall during the session).
type Tarpit interface {
	Delay() time.Duration
}

// Stress is the profile every session follows while the server is under
// stress (internal/stress), Postfix's stress-dependent defaults. It only
// ever tightens a session's terms: each is the lesser of the session's own
// and this, read at each wait, so that sessions already open (the
// slowloris ones above all) are held to it too. A zero field leaves its
// term alone.
type Stress struct {
	CommandTimeout time.Duration // each command wait, and each block of message data
	MaxErrors      int           // hard_error_limit
	MaxJunk        int           // junk_command_limit
	GreetPause     time.Duration // the longest greeting pause
}

// Server runs SMTP sessions on connections the caller accepted.
type Server struct {
	cfg    atomic.Pointer[Config]
	stress atomic.Pointer[Stress] // nil: not under stress
	log    *slog.Logger

	ids      atomic.Uint64
	pausing  atomic.Int64 // sessions in the greeting pause
	idPrefix string

	// readers holds the read buffers of sessions that are not waiting
	// idle: thousands of clients silent between commands then cost a
	// goroutine and a socket each, not also 4 KiB of buffer.
	readers sync.Pool

	mu       sync.Mutex
	conns    map[*conn]struct{}
	early    map[*hold.Ticket]struct{} // greeting pauses held before their sessions (HoldGreeting)
	draining atomic.Bool
	done     chan struct{} // closed when conns becomes empty while draining
}

// NewServer returns a Server for cfg and h.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv := &Server{
		log:      cfg.Logger,
		idPrefix: strconv.FormatInt(time.Now().Unix(), 36),
		conns:    make(map[*conn]struct{}),
		early:    make(map[*hold.Ticket]struct{}),
	}
	srv.SetConfig(cfg)
	return srv
}

// SetConfig replaces the configuration for sessions that start from now on
// (a reload); running sessions keep theirs.
func (srv *Server) SetConfig(cfg Config) {
	if err := cfg.Timeouts.check(); err != nil {
		panic(err)
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	srv.cfg.Store(&cfg)
}

// Stress is the stress profile in force; nil when the server is not
// under stress.
func (srv *Server) Stress() *Stress { return srv.stress.Load() }

// SetStress puts every session, open or to come, under p; nil lifts it.
// Sessions waiting for a command are woken to hold them to p's timeout
// from when their wait began: the slow and idle clients that fill a server
// under stress are cut within p.CommandTimeout, not their own timeouts.
func (srv *Server) SetStress(p *Stress) {
	srv.stress.Store(p)
	if p == nil || p.CommandTimeout <= 0 {
		return
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for c := range srv.conns {
		c.wakeWaiting()
	}
}

// ServeConn speaks SMTP on nc until the client quits, a timeout or error
// ends the session, or ctx is done (hard stop). It closes nc, and calls
// h.Close when the session is over. With a Holder it may return earlier,
// while the session waits in the greeting pause; the session goes on
// without the caller.
func (srv *Server) ServeConn(ctx context.Context, nc net.Conn, info ConnInfo, h Handler) {
	cfg := srv.cfg.Load()
	mc := &meteredConn{Conn: nc, max: cfg.MaxSessionBytes}
	c := &conn{srv: srv, h: h, raw: nc, mc: mc, nc: mc, ctx: ctx, cfg: cfg, start: info.Held.Since}
	if c.start.IsZero() {
		c.start = time.Now()
	}
	c.sess.ctx = ctx
	if cfg.MaxSessionTime > 0 {
		c.end = c.start.Add(cfg.MaxSessionTime)
	}
	c.sess.ConnInfo = info
	c.sess.ID = srv.idPrefix + strconv.FormatUint(srv.ids.Add(1), 36)
	if !srv.track(c) {
		// Shutting down: refuse politely.
		c.reply(&reply.Reply{Code: 421, Status: "4.3.2", Text: c.cfg.Hostname + " Service shutting down"})
		c.flush()
		nc.Close()
		h.Close(&c.sess)
		return
	}
	c.cfg.Observer.SessionStart(info.Remote.Addr(), info.Host)
	c.stop = context.AfterFunc(ctx, func() {
		nc.SetDeadline(time.Unix(1, 0))
		c.endPause()
	})
	c.serve()
}

// HoldGreeting holds the greeting pause of client's connection nc before
// its session exists, with the Holder, so that a client waiting for its
// greeting costs a socket and a few hundred octets rather than a session
// and its goroutine: in a flood nearly every open connection is one. nc's
// socket is taken out of it (hold.Detach) for the pause. When the pause
// ends (its time is up, the client talks or leaves, Shutdown, or the
// Holder's context is done), start runs in a new goroutine with the socket
// as a new net.Conn and how the pause ended; it must call ServeConn with
// them (ConnInfo.Held), and the session judges the pause as if it had
// waited itself. If the socket cannot be made a net.Conn again (out of
// descriptors), start gets nil, to release what the caller holds for the
// client. The sessions' ctx must be the Holder's.
//
// HoldGreeting holds nothing and reports false when the pause cannot be
// held this way: no pause, no Holder running, nc not a plain TCP
// connection, or the server shutting down. The caller then calls
// ServeConn with nc itself. A session with a ConnInfo.Screen to wait for
// first must not be held this way.
func (srv *Server) HoldGreeting(nc net.Conn, client netip.Addr, pause time.Duration, start func(net.Conn, Held)) bool {
	cfg := srv.cfg.Load()
	p := srv.greetPause(pause)
	tc, ok := nc.(*net.TCPConn)
	if cfg.Holder == nil || !cfg.Holder.Running() || !ok || p <= 0 || srv.draining.Load() {
		return false
	}
	since := time.Now()
	until := since.Add(p)
	if cfg.MaxSessionTime > 0 && cfg.MaxSessionTime < p {
		until = since.Add(cfg.MaxSessionTime)
	}
	fd, err := hold.Detach(tc)
	if err != nil {
		return false
	}
	cfg.Observer.GreetPause(1)
	srv.pausing.Add(1)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	// What end keeps is all that stays in memory for the client, with
	// the Ticket and what the caller's start keeps.
	var t *hold.Ticket
	end := func(r hold.Result) {
		// In a goroutine of its own: End runs this under srv.mu
		// (Shutdown), and the Holder's loop must not wait.
		go func() {
			cfg.Observer.GreetPause(-1)
			srv.pausing.Add(-1)
			srv.mu.Lock()
			delete(srv.early, t)
			srv.settle()
			srv.mu.Unlock()
			nc, err := hold.Attach(fd)
			if err != nil {
				srv.log.Warn("connection lost after the greeting pause", "ip", client.String(), "err", err.Error())
				nc = nil
			}
			start(nc, Held{Result: r, Since: since})
		}()
	}
	if srv.draining.Load() {
		end(hold.Ended) // Shutdown has passed by
		return true
	}
	if t, err = cfg.Holder.HoldFD(fd, until, end); err != nil {
		end(hold.Ended) // the Holder stopped meanwhile
		return true
	}
	srv.early[t] = struct{}{}
	return true
}

// greetPause is a session's greeting pause, under stress the profile's if
// that is shorter.
func (srv *Server) greetPause(p time.Duration) time.Duration {
	if st := srv.stress.Load(); st != nil && p > 0 {
		return tighter(p, st.GreetPause)
	}
	return p
}

func (srv *Server) track(c *conn) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.draining.Load() {
		return false
	}
	srv.conns[c] = struct{}{}
	return true
}

func (srv *Server) untrack(c *conn) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	delete(srv.conns, c)
	srv.settle()
}

// settle tells Shutdown when the last session is over; srv.mu held.
func (srv *Server) settle() {
	if len(srv.conns)+len(srv.early) == 0 && srv.done != nil {
		close(srv.done)
		srv.done = nil
	}
}

// Shutdown stops the server gracefully: sessions waiting for a command
// outside a mail transaction get "421 Service shutting down" at once;
// sessions inside one may finish it (a message that got 250 is on disk
// already). When ctx is done first, the remaining sessions are cut off.
// Shutdown returns when no session is left.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	srv.draining.Store(true)
	var done chan struct{}
	if len(srv.conns)+len(srv.early) > 0 {
		srv.done = make(chan struct{})
		done = srv.done
	}
	for c := range srv.conns {
		c.wakeIfIdle()
		c.endPause()
	}
	for t := range srv.early {
		srv.cfg.Load().Holder.End(t)
	}
	srv.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	srv.mu.Lock()
	for c := range srv.conns {
		c.raw.SetDeadline(time.Unix(1, 0))
		c.endPause()
	}
	srv.mu.Unlock()
	<-done
	return ctx.Err()
}

// InGreetPause is the number of sessions held in the greeting pause now.
func (srv *Server) InGreetPause() int64 { return srv.pausing.Load() }

// Draining reports whether Shutdown has begun.
func (srv *Server) Draining() bool { return srv.draining.Load() }

// Sessions is the number of sessions running now.
func (srv *Server) Sessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.conns) + len(srv.early)
}

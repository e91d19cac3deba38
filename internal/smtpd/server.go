package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
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
// ends the session, or ctx is done (hard stop). It closes nc.
func (srv *Server) ServeConn(ctx context.Context, nc net.Conn, info ConnInfo, h Handler) {
	cfg := srv.cfg.Load()
	mc := &meteredConn{Conn: nc, max: cfg.MaxSessionBytes}
	c := &conn{srv: srv, h: h, raw: nc, mc: mc, nc: mc, ctx: ctx, cfg: cfg}
	c.sess.ctx = ctx
	defer h.Close(&c.sess)
	if cfg.MaxSessionTime > 0 {
		c.end = time.Now().Add(cfg.MaxSessionTime)
	}
	c.sess.ConnInfo = info
	c.sess.ID = srv.idPrefix + strconv.FormatUint(srv.ids.Add(1), 36)
	if !srv.track(c) {
		// Shutting down: refuse politely.
		c.reply(&reply.Reply{Code: 421, Status: "4.3.2", Text: c.cfg.Hostname + " Service shutting down"})
		c.flush()
		nc.Close()
		return
	}
	defer srv.untrack(c)
	c.cfg.Observer.SessionStart(info.Remote.Addr(), info.Host)
	defer c.cfg.Observer.SessionEnd(info.Remote.Addr())
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.serve()
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
	if len(srv.conns) == 0 && srv.done != nil {
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
	if len(srv.conns) > 0 {
		srv.done = make(chan struct{})
		done = srv.done
	}
	for c := range srv.conns {
		c.wakeIfIdle()
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
	return len(srv.conns)
}

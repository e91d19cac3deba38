package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/mxguard/mxguard/internal/hold"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reply"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxCommandLine is RFC 5321 4.5.3.1.4's limit, CRLF included.
const maxCommandLine = 512

// readBufSize is the session's read buffer: larger than a command line,
// large enough to take a pipelined batch of commands in one read, small
// enough that thousands of idle sessions stay cheap. It is also the longest
// command line that is read to its end: a line between maxCommandLine and
// this gets 500 and the session goes on (a client that miscounts, or a long
// VRFY, is not an attack), but a longer one can only be garbage or a client
// that never ends its line, and reading on to find its end is exactly the
// unbounded work an abuser wants. It gets 500 and the connection is closed.
const readBufSize = 4096

// sizeMargin is how far past MaxMessageSize a body is still read to its
// end. A message just over the limit (its sender did not declare SIZE, or
// counted differently: we count octets as transmitted, dot-stuffing
// included, SIZE counts them before stuffing) still gets its 552 after the
// final dot, in step, and its sender can go on with the next message in
// the same session. Beyond the margin the body is plainly not a message we
// will take, and reading on only serves a client that never stops: the
// session replies 552 at once and closes. 64 KiB is one data block (the
// unit the datablock deadline counts in) and 0.25 % of the default 25 MiB
// limit, so the abuse a margin allows stays small next to the limit itself.
const sizeMargin = 64 << 10

// blockSize is how much message data renews the data-block deadline: a
// client must keep sending at least this much per Timeouts.DataBlock.
const blockSize = 64 << 10

// Session is the state of one SMTP session that a Handler may read.
type Session struct {
	ConnInfo
	ID       string               // unique per session, for logs
	Helo     string               // HELO/EHLO argument
	ESMTP    bool                 // EHLO (not HELO) was used
	TLS      *tls.ConnectionState // after STARTTLS
	From     Path                 // MAIL FROM of the current transaction
	Rcpts    []Path               // accepted recipients of the current transaction
	UTF8     bool                 // MAIL FROM carried SMTPUTF8
	EightBit bool                 // MAIL FROM carried BODY=8BITMIME
	inTx     bool
	ctx      context.Context
}

// Context is done when the server stops hard: a handler's waits (a probe
// of the downstream) end with it.
func (s *Session) Context() context.Context { return s.ctx }

// resetTx ends the mail transaction, here and in the handler.
func (c *conn) resetTx() {
	c.sess.reset()
	c.h.Reset(&c.sess)
}

func (s *Session) reset() {
	s.From, s.Rcpts, s.UTF8, s.EightBit, s.inTx = Path{}, s.Rcpts[:0], false, false, false
}

// Session phases, which decide the timeout of the next wait.
const (
	phaseHelo = iota
	phaseMail
	phaseRcpt
	phaseDataInit
	phaseRset
	phaseQuit
	phaseMisc
)

var phaseNames = [...]string{"helo", "mail", "rcpt", "datainit", "rset", "quit", "misc"}

type conn struct {
	srv  *Server
	h    Handler
	raw  net.Conn     // the accepted connection; deadlines set from other goroutines go here
	mc   *meteredConn // raw, counting what the client sends
	nc   net.Conn     // mc, or the TLS connection over it after STARTTLS
	ctx  context.Context
	cfg  *Config       // the server's configuration when the session started
	br   *bufio.Reader // nil while the session waits idle for a command
	ir   idleReader
	out  []byte
	sess Session

	start     time.Time   // ServeConn, or the greeting pause held before it (ConnInfo.Since)
	stop      func() bool // ends the hard stop's watch on ctx
	end       time.Time   // the session's end (MaxSessionTime); zero = none
	atEnd     bool        // the read deadline now set is end, not a phase's own
	phase     int
	errors    int
	junks     int    // junk commands (see junk)
	badRcpts  int    // refused recipients of this transaction (BadRcptThrottle)
	badTotal  int    // and of the session (MaxBadRcpts)
	verb      string // the command being run, as a metrics label
	greeted   bool   // the 220 went out
	commands  int    // commands run
	messages  int    // messages accepted
	rejects   int    // replies of 4xx and 5xx sent
	lastCode  int    // of the last reply queued
	throttled bool
	noTarpit  bool        // replies go out at once whatever the Tarpit says
	idle      atomic.Bool // waiting for a command outside a transaction
	waitStart time.Time   // when the wait for the command began
	wmu       sync.Mutex
	waiting   bool         // in waitInput, for the first octet of a command; guarded by wmu
	woken     bool         // wakeWaiting set the deadline during this wait; guarded by wmu
	pausing   bool         // in the greeting pause, in this goroutine; guarded by wmu
	ticket    *hold.Ticket // in the greeting pause, with the Holder; guarded by wmu
}

// note writes the one log line of a refusal or cut-off, with the client's
// ip= and the reason=, and counts it.
func (c *conn) note(why reason.Reason, msg string, attrs ...any) {
	c.cfg.Observer.Refused(why, c.sess.Remote.Addr(), c.sess.Host)
	c.log().Info(msg, append([]any{"reason", why}, attrs...)...)
}

func (c *conn) log() *slog.Logger {
	return c.srv.log.With("session", c.sess.ID, "ip", c.sess.Remote.Addr().String())
}

// clientName is "host [ip]" as sendmail writes it in its log lines.
func (c *conn) clientName() string {
	host := c.sess.Host
	if host == "" {
		host = "unknown"
	}
	return host + " [" + c.sess.Remote.Addr().String() + "]"
}

// serve runs the session from its start. It returns early, the session
// still open, when the greeting pause is handed to the Holder: resume
// then goes on with it in a goroutine of its own.
func (c *conn) serve() {
	held := false
	defer c.exit(&held)
	var ok bool
	if ok, held = c.greet(); ok {
		c.commandLoop()
	}
}

// resume goes on with a session whose greeting pause the Holder ended.
func (c *conn) resume(r hold.Result) {
	c.wmu.Lock()
	c.ticket = nil
	c.wmu.Unlock()
	held := false
	defer c.exit(&held)
	if c.afterPause(c.heldOutcome(r)) && c.sendGreeting() {
		c.commandLoop()
	}
}

// heldOutcome is the greeting pause's read, as the Holder's result r
// tells it.
func (c *conn) heldOutcome(r hold.Result) (int, error) {
	switch r {
	case hold.Ready:
		// The client sent something or left: the read finds which at once.
		c.nc.SetReadDeadline(time.Now().Add(time.Second))
		var b [1]byte
		return c.nc.Read(b[:])
	case hold.Elapsed:
		c.atEnd = !c.end.IsZero() && !time.Now().Before(c.end)
		return 0, os.ErrDeadlineExceeded
	}
	return 0, errPauseEnded
}

// exit ends the session unless it is held; it also keeps a panic in one
// session from taking the server down with it.
func (c *conn) exit(held *bool) {
	if v := recover(); v != nil {
		c.log().Error("panic in session", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		*held = false
	}
	if *held {
		return
	}
	c.putReader()
	c.nc.Close()
	// One line per session that got its greeting, as Postfix's
	// "disconnect from": what the client did, for the log reader.
	if c.greeted {
		c.log().Info("disconnect from "+c.clientName(), "commands", c.commands, "messages", c.messages,
			"rejects", c.rejects, "octets", c.mc.n, "duration", time.Since(c.start).Round(time.Millisecond))
	}
	c.stop()
	c.cfg.Observer.SessionEnd(c.sess.Remote.Addr())
	c.srv.untrack(c)
	c.h.Close(&c.sess)
}

// commandLoop reads and runs commands until the session ends.
func (c *conn) commandLoop() {
	c.ir.c = c
	for {
		line, err := c.readCommand()
		if err != nil {
			c.readFailed(err, phaseNames[c.phase])
			return
		}
		if line == "" {
			continue // reply already queued
		}
		if c.pipelinedAhead(line) {
			c.note(reason.Pipelining, "improper command pipelining after "+verbOf(line)+" from "+c.clientName(), "octets", c.br.Buffered())
			c.reply(replyPipelining)
			c.flush()
			return
		}
		start := time.Now()
		c.commands++
		ok := c.dispatch(line)
		c.cfg.Observer.Command(c.verb, c.lastCode, time.Since(start))
		if !ok {
			c.flush()
			return
		}
		if limit := c.maxErrors(); limit > 0 && c.errors >= limit {
			c.note(reason.TooManyErrors, "too many errors, disconnecting", "client", c.clientName())
			c.reply(replyTooManyErrs)
			c.flush()
			return
		}
	}
}

// errPauseEnded is the end of a greeting pause cut short by Shutdown or a
// hard stop.
var errPauseEnded = errors.New("greeting pause ended")

// greet holds the greeting for the pause and sends it, unless the client
// talks first (sendmail's greet_pause): then it gets 554 and is dropped.
// Nothing the client sent early is ever parsed. held is true when the
// pause went to the Holder: the session is then resume's.
func (c *conn) greet() (ok, held bool) {
	if r := c.sess.Held.Result; r != 0 {
		// HoldGreeting held the pause: judge how it ended.
		n, err := c.heldOutcome(r)
		return c.judgePause(n, err) && c.sendGreeting(), false
	}
	start := time.Now()
	p := c.srv.greetPause(c.sess.GreetPause)
	if screen := c.sess.Screen; screen != nil {
		// Whatever the client sends meanwhile waits in the kernel's buffer
		// for the pause's read below.
		reject, pass := screen(c.ctx)
		if reject != nil {
			c.noTarpit = true // refused as at admission: closed at once
			c.reply(reject)
			c.flush()
			return false, false
		}
		switch {
		case pass:
			p = 0
		case p > 0:
			// What the pause has left; at least a glance at what the
			// client sent while the screen waited.
			p = max(p-time.Since(start), time.Millisecond)
		}
	}
	if p <= 0 {
		return c.sendGreeting(), false
	}
	c.cfg.Observer.GreetPause(1)
	c.srv.pausing.Add(1)
	until := time.Now().Add(p)
	c.atEnd = !c.end.IsZero() && !until.Before(c.end)
	if c.atEnd {
		until = c.end
	}
	if c.hold(until) {
		return false, true
	}
	n, err := c.waitPause(until)
	return c.afterPause(n, err) && c.sendGreeting(), false
}

// waitPause is the greeting pause in the session's goroutine: a read of
// one octet until the pause is over.
func (c *conn) waitPause(until time.Time) (int, error) {
	c.wmu.Lock()
	c.pausing = !c.srv.draining.Load() // else Shutdown has passed by, and would not end the pause
	pausing := c.pausing
	c.wmu.Unlock()
	if !pausing {
		return 0, errPauseEnded
	}
	c.setReadDeadline(until)
	var b [1]byte
	n, err := c.nc.Read(b[:])
	c.wmu.Lock()
	c.pausing = false
	c.wmu.Unlock()
	return n, err
}

// hold hands the greeting pause to the Holder, if there is one and it
// can watch this connection.
func (c *conn) hold(until time.Time) bool {
	hd := c.cfg.Holder
	sc, ok := c.raw.(syscall.Conn)
	if hd == nil || !ok {
		return false
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.srv.draining.Load() {
		return false // Shutdown has passed by: no one would end the hold
	}
	t, err := hd.Hold(sc, until, func(r hold.Result) { go c.resume(r) })
	if err != nil {
		return false
	}
	c.ticket = t
	return true
}

// endPause ends a greeting pause now (Shutdown, hard stop).
func (c *conn) endPause() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch {
	case c.ticket != nil:
		c.cfg.Holder.End(c.ticket)
	case c.pausing:
		c.raw.SetReadDeadline(time.Unix(1, 0))
	}
}

// afterPause ends the greeting pause and judges it.
func (c *conn) afterPause(n int, err error) bool {
	c.cfg.Observer.GreetPause(-1)
	c.srv.pausing.Add(-1)
	return c.judgePause(n, err)
}

// judgePause judges the greeting pause by its read: n octets and err.
func (c *conn) judgePause(n int, err error) bool {
	switch {
	case n > 0:
		c.note(reason.Pregreet, "rejecting commands from "+c.clientName()+" due to pre-greeting traffic")
		c.reply(&reply.Reply{Code: 554, Status: "", Text: c.cfg.Hostname + " not accepting messages"})
		c.flush()
		return false
	case c.ctx.Err() != nil:
		return false
	case c.srv.draining.Load():
		c.readFailed(errDraining, "greet")
		return false
	case !isTimeout(err):
		return false // the client left during the pause
	case c.atEnd:
		c.readFailed(err, "greet")
		return false
	}
	return true
}

func (c *conn) sendGreeting() bool {
	c.reply(&reply.Reply{Code: 220, Status: "", Text: c.cfg.Hostname + " ESMTP mxguard"})
	c.greeted = true
	return c.flush()
}

// readCommand reads one command line. A line that breaks the rules gets its
// reply queued and comes back as "".
func (c *conn) readCommand() (string, error) {
	if c.br == nil || c.br.Buffered() == 0 {
		// Pipelining (RFC 2920): replies go out when the client's batch is used up.
		if !c.flush() {
			return "", io.ErrClosedPipe
		}
		if !c.sess.inTx {
			c.idle.Store(true)
			defer c.idle.Store(false)
			if c.srv.draining.Load() {
				return "", errDraining
			}
		}
	}
	c.waitStart = time.Now()
	c.setReadDeadline(c.waitStart.Add(c.timeout()))
	if c.br == nil || c.br.Buffered() == 0 {
		if err := c.waitInput(); err != nil {
			return "", c.readError(err)
		}
	}
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", errLineCut // see readBufSize
	}
	if err != nil {
		return "", c.readError(err)
	}
	if len(line) > maxCommandLine {
		return c.lineError(replyLineTooLong, reason.LineTooLong)
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return c.lineError(replyBareLFCmd, reason.BareLF)
	}
	line = line[:len(line)-2]
	for _, b := range line {
		switch {
		case b == 0:
			return c.lineError(replyNULCmd, reason.NUL)
		case b == '\r':
			return c.lineError(replyBareLFCmd, reason.BareCR)
		}
	}
	return string(line), nil
}

// Reasons a session ends early that readFailed reports.
var (
	errDraining     = errors.New("server shutting down")
	errLineCut      = errors.New("command line longer than the read buffer")
	errSessionBytes = errors.New("session byte limit exceeded")
)

func (c *conn) readError(err error) error {
	if c.srv.draining.Load() && isTimeout(err) && c.ctx.Err() == nil {
		return errDraining
	}
	return err
}

// waitInput gives the read buffer back while the client is silent and
// takes one again when its first byte arrives.
func (c *conn) waitInput() error {
	c.putReader()
	c.setWaiting(true)
	n, err := c.nc.Read(c.ir.first[:])
	for n == 0 && isTimeout(err) && c.rearm() {
		n, err = c.nc.Read(c.ir.first[:])
	}
	if c.setWaiting(false) && n > 0 {
		// A wake-up came between the read and the end of the wait: the
		// rest of the command gets the deadline it should have.
		c.setReadDeadline(c.waitStart.Add(c.timeout()))
	}
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	c.ir.has = true
	c.br, _ = c.srv.readers.Get().(*bufio.Reader)
	if c.br == nil {
		c.br = bufio.NewReaderSize(nil, readBufSize)
	}
	c.br.Reset(&c.ir)
	return nil
}

// rearm is called when the wait for a command timed out: the server may
// have woken it (SetStress) to hold it to a shorter timeout. It sets the
// wait's deadline again, from when the wait began, and reports whether
// the wait goes on.
func (c *conn) rearm() bool {
	if c.srv.draining.Load() || c.ctx.Err() != nil {
		return false
	}
	d := c.waitStart.Add(c.timeout())
	c.setReadDeadline(d)
	if c.atEnd {
		d = c.end
	}
	return time.Now().Before(d)
}

// setWaiting marks the wait for a command begun or over, and reports
// whether a wake-up came since it began.
func (c *conn) setWaiting(w bool) (woken bool) {
	c.wmu.Lock()
	c.waiting, woken, c.woken = w, c.woken, false
	c.wmu.Unlock()
	return woken
}

// wakeWaiting makes a session waiting for a command look at its deadline
// again (rearm).
func (c *conn) wakeWaiting() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.waiting {
		c.woken = true
		c.raw.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *conn) putReader() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		c.srv.readers.Put(c.br)
		c.br = nil
	}
}

// idleReader is the read buffer's source: the byte that ended an idle
// wait, then the connection.
type idleReader struct {
	c     *conn
	first [1]byte
	has   bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.has && len(p) > 0 {
		r.has = false
		p[0] = r.first[0]
		return 1, nil
	}
	return r.c.nc.Read(p)
}

func (c *conn) lineError(r *reply.Reply, why reason.Reason) (string, error) {
	c.note(why, "protocol error from "+c.clientName())
	c.fail(r)
	return "", nil
}

// readFailed ends the session after a failed read while waiting for phase:
// a phase timeout gets sendmail's 421, a shutdown 421, a client over the
// session's limits its own 421 (and a command line past the read buffer
// 500), a vanished client nothing. Each limit is logged with its own reason
// so that an operator (or fail2ban) tells them apart. The replies still
// queued go out in every case: a client that pipelined its last commands
// and closed its side may still be reading, and one that never sees the 250
// for a message we stored sends the message again.
func (c *conn) readFailed(err error, phase string) {
	switch {
	case err == errDraining || c.ctx.Err() != nil:
		c.reply(&reply.Reply{Code: 421, Status: "4.3.2", Text: c.cfg.Hostname + " Service shutting down"})
	case err == errLineCut:
		c.note(reason.LineTooLong, "command line too long from "+c.clientName()+", disconnecting", "limit", readBufSize)
		c.reply(replyLineTooLong)
	case errors.Is(err, errSessionBytes):
		c.note(reason.SessionBytes, "session byte limit exceeded by "+c.clientName()+", disconnecting", "phase", phase, "octets", c.mc.n)
		c.reply(&reply.Reply{Code: 421, Status: "4.7.0", Text: c.cfg.Hostname + " Error: session data limit exceeded"})
	case isTimeout(err) && c.atEnd:
		c.note(reason.SessionTime, "session time limit exceeded by "+c.clientName()+", disconnecting", "phase", phase, "octets", c.mc.n)
		c.reply(&reply.Reply{Code: 421, Status: "4.7.0", Text: c.cfg.Hostname + " Error: session time limit exceeded"})
	case isTimeout(err):
		why, _ := reason.ByPhase(phase)
		c.note(why, "timeout waiting for "+phase+" from "+c.clientName(), "phase", phase)
		c.reply(&reply.Reply{Code: 421, Status: "4.4.2", Text: c.cfg.Hostname + " Error: timeout exceeded"})
	}
	c.flush()
}

// setReadDeadline sets the deadline of the next read, never later than the
// session's end, and notes which of the two it is.
func (c *conn) setReadDeadline(d time.Time) {
	c.atEnd = !c.end.IsZero() && !d.Before(c.end)
	if c.atEnd {
		d = c.end
	}
	c.nc.SetReadDeadline(d)
}

func (c *conn) timeout() time.Duration {
	d := c.phaseTimeout()
	if st := c.srv.stress.Load(); st != nil {
		return tighter(d, st.CommandTimeout)
	}
	return d
}

func (c *conn) phaseTimeout() time.Duration {
	t := &c.cfg.Timeouts
	switch c.phase {
	case phaseHelo:
		return t.Helo
	case phaseMail:
		return t.Mail
	case phaseRcpt:
		return t.Rcpt
	case phaseDataInit:
		return t.DataInit
	case phaseRset:
		return t.Rset
	case phaseQuit:
		return t.Quit
	case phaseMisc:
		return t.Misc
	}
	return t.Command
}

// wakeIfIdle makes an idle session notice a shutdown at once.
func (c *conn) wakeIfIdle() {
	if c.idle.Load() {
		c.raw.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *conn) reply(r *reply.Reply) {
	c.lastCode = r.Code
	if r.Code >= 400 {
		c.rejects++
	}
	c.out = r.AppendTo(c.out)
}

// tighter is the lesser of a limit and the stress profile's, where 0 is
// no limit.
func tighter[T int | time.Duration](own, stress T) T {
	if stress > 0 && (own <= 0 || stress < own) {
		return stress
	}
	return own
}

// maxErrors is the session's error limit now.
func (c *conn) maxErrors() int {
	if st := c.srv.stress.Load(); st != nil {
		return tighter(c.cfg.MaxErrors, st.MaxErrors)
	}
	return c.cfg.MaxErrors
}

// junk counts a command that moves no mail (NOOP, VRFY, EXPN, RSET, HELP):
// past the junk limit each one counts as an error too, as Postfix's
// smtpd_junk_command_limit, so that a client cannot hold its session with
// them for ever.
func (c *conn) junk() {
	c.junks++
	limit := c.cfg.MaxJunk
	if st := c.srv.stress.Load(); st != nil {
		limit = tighter(limit, st.MaxJunk)
	}
	if limit > 0 && c.junks > limit {
		c.errors++
	}
}

// fail queues an error reply and counts it towards MaxErrors.
func (c *conn) fail(r *reply.Reply) {
	c.errors++
	c.reply(r)
}

// flush writes queued replies; false if the client is gone.
func (c *conn) flush() bool {
	if len(c.out) == 0 {
		return true
	}
	if t := c.sess.Tarpit; t != nil && !c.noTarpit && c.srv.stress.Load() == nil {
		// A low-scored client waits for its replies, in this session's
		// goroutine (a timer: no thread). Not under stress, where the
		// connection slot it holds meanwhile is wanted.
		if d := t.Delay(); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-c.ctx.Done():
				timer.Stop()
			}
		}
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.cfg.Timeouts.Command + time.Second))
	_, err := c.nc.Write(c.out)
	if cap(c.out) > 4096 {
		c.out = nil // a one-off large reply should not stay with an idle session
	} else {
		c.out = c.out[:0]
	}
	return err == nil
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// pipelinedAhead reports a command the client followed with more input
// without waiting for its reply where RFC 2920 forbids it: after a
// command that must end a group (its outcome changes what the client may
// send next), or at all in a session that was not offered PIPELINING
// (HELO, or no greeting command yet). Bulk mail software does this; real
// clients wait. Postfix 3.9 disconnects such clients by default
// (smtpd_forbid_unauth_pipelining), and so do we. QUIT is let through:
// nothing comes after it anyway.
func (c *conn) pipelinedAhead(line string) bool {
	if c.br == nil || c.br.Buffered() == 0 {
		return false
	}
	v := verbOf(line)
	switch v {
	case "QUIT":
		return false
	case "EHLO", "HELO", "DATA", "NOOP", "VRFY", "EXPN": // STARTTLS: plaintext after it is discarded (conn.starttls)
		return true
	}
	// An HTTP request comes with its headers at once: it is refused as
	// what it is (non-SMTP) by dispatch.
	return !c.sess.ESMTP && verbLabel(v) != "non-smtp"
}

// verbOf is the command's verb in upper case, cheaply, for the checks
// made before a command is parsed.
func verbOf(line string) string {
	v, _, _ := strings.Cut(line, " ")
	if len(v) > 8 {
		return "unknown"
	}
	return strings.ToUpper(v)
}

// verbLabel is a command's verb as a label: the commands the server
// knows, or "unknown", so that a client cannot make up new labels.
func verbLabel(v string) string {
	switch v {
	case "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS":
		return v
	case "GET", "POST", "HEAD", "PUT", "CONNECT", "USER":
		return "non-smtp"
	}
	return "unknown"
}

// dispatch runs one command; false ends the session.
func (c *conn) dispatch(line string) bool {
	cmd, err := ParseCommand(line)
	if err != nil {
		c.verb = "unknown"
		c.fail(replyUnknown)
		return true
	}
	c.verb = verbLabel(cmd.Verb)
	if cmd.Verb != "MAIL" && cmd.Verb != "RCPT" && !isASCII(cmd.Arg) {
		c.cfg.Observer.Refused(reason.NonASCII, c.sess.Remote.Addr(), c.sess.Host)
		c.fail(replyNonASCIICmd)
		return true
	}
	switch cmd.Verb {
	case "HELO", "EHLO":
		c.helo(cmd)
	case "MAIL":
		c.mail(cmd.Arg)
	case "RCPT":
		return c.rcpt(cmd.Arg)
	case "DATA":
		return c.data(cmd.Arg)
	case "RSET":
		c.junk()
		c.resetTx()
		c.phase = phaseRset
		c.reply(replyOK)
	case "NOOP":
		c.junk()
		c.phase = phaseMisc
		c.reply(replyOK)
	case "QUIT":
		c.reply(&reply.Reply{Code: 221, Status: "2.0.0", Text: c.cfg.Hostname + " closing connection"})
		return false
	case "VRFY":
		c.junk()
		c.phase = phaseMisc
		c.reply(replyVRFY)
	case "EXPN":
		c.junk()
		c.phase = phaseMisc
		c.reply(replyEXPN)
	case "HELP":
		c.junk()
		c.phase = phaseMisc
		c.reply(replyHelp)
	case "STARTTLS":
		return c.starttls(cmd.Arg)
	case "GET", "POST", "HEAD", "PUT", "CONNECT", "USER":
		// A proxy or web client aimed at port 25: nothing SMTP will follow.
		c.note(reason.NonSMTP, "non-SMTP command from "+c.clientName(), "command", cmd.Verb)
		c.reply(replyNotSMTP)
		return false
	default:
		c.fail(replyUnknown)
	}
	return true
}

func (c *conn) helo(cmd Command) {
	arg := strings.TrimSpace(cmd.Arg)
	if arg == "" || strings.ContainsAny(arg, " \t") && cmd.Verb == "HELO" {
		c.fail(&reply.Reply{Code: 501, Status: "5.5.4", Text: "Syntax: " + cmd.Verb + " hostname"})
		return
	}
	c.resetTx()
	c.sess.Helo = arg
	c.sess.ESMTP = cmd.Verb == "EHLO"
	c.phase = phaseMail
	if !c.sess.ESMTP {
		c.reply(&reply.Reply{Code: 250, Status: "", Text: c.cfg.Hostname})
		return
	}
	ext := []string{c.cfg.Hostname, "PIPELINING"}
	if m := c.cfg.MaxMessageSize; m > 0 {
		ext = append(ext, fmt.Sprintf("SIZE %d", m))
	} else {
		ext = append(ext, "SIZE")
	}
	ext = append(ext, "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8")
	if c.cfg.TLS != nil && c.sess.TLS == nil {
		ext = append(ext, "STARTTLS")
	}
	c.reply(&reply.Reply{Code: 250, Status: "", Text: strings.Join(ext, "\n")})
}

// cutPrefixFold is strings.CutPrefix, ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func (c *conn) mail(arg string) {
	switch {
	case c.sess.Helo == "":
		c.fail(replyNeedHelo)
		return
	case c.sess.inTx:
		c.fail(replyNestedMail)
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		c.fail(&reply.Reply{Code: 501, Status: "5.5.4", Text: "Syntax: MAIL FROM:<address>"})
		return
	}
	from, params, err := ParsePathArg(rest, true, false)
	if err != nil {
		c.fail(pathError(err, "sender"))
		return
	}
	var size int64
	var utf8, eightBit bool
	for _, p := range params {
		if !c.sess.ESMTP {
			c.fail(&reply.Reply{Code: 555, Status: "5.5.4", Text: "Unsupported option: " + p.Key})
			return
		}
		switch p.Key {
		case "SIZE":
			n, ok := parseSize(p.Value)
			if !ok {
				c.fail(replyNoParams)
				return
			}
			size = n
		case "BODY":
			switch strings.ToUpper(p.Value) {
			case "7BIT":
			case "8BITMIME":
				eightBit = true
			default:
				c.fail(replyNoParams)
				return
			}
		case "SMTPUTF8":
			if p.Value != "" {
				c.fail(replyNoParams)
				return
			}
			utf8 = true
		default:
			c.fail(&reply.Reply{Code: 555, Status: "5.5.4", Text: "Unsupported option: " + p.Key})
			return
		}
	}
	if !utf8 && !isASCII(from.String()) {
		c.fail(&reply.Reply{Code: 553, Status: "5.6.7", Text: "Non-ASCII address requires SMTPUTF8"})
		return
	}
	if m := c.cfg.MaxMessageSize; m > 0 && size > m {
		c.reply(replyTooBig)
		return
	}
	if r := c.sess.Defer; r != nil {
		c.reply(r)
		return
	}
	if r := c.h.Mail(&c.sess, from, size); r != nil && r.Failed() {
		c.reply(r)
		return
	} else if r != nil {
		c.reply(r)
	} else {
		c.reply(&reply.Reply{Code: 250, Status: "2.1.0", Text: "Ok"})
	}
	c.sess.inTx = true
	c.sess.From, c.sess.UTF8, c.sess.EightBit = from, utf8, eightBit
	c.badRcpts, c.throttled = 0, false
	c.phase = phaseRcpt
}

func pathError(err error, what string) *reply.Reply {
	status := "5.1.7"
	if what == "recipient" {
		status = "5.1.3"
	}
	switch err {
	case ErrNonASCIIPath:
		return &reply.Reply{Code: 553, Status: "5.6.7", Text: "Non-ASCII address requires SMTPUTF8"}
	case ErrParamSyntax:
		return replyNoParams
	case ErrPathTooLong:
		return &reply.Reply{Code: 501, Status: status, Text: "Bad " + what + " address syntax: too long"}
	}
	return &reply.Reply{Code: 501, Status: status, Text: "Bad " + what + " address syntax"}
}

// rcpt runs RCPT; false ends the session (MaxBadRcpts reached).
func (c *conn) rcpt(arg string) bool {
	if !c.sess.inTx {
		c.fail(replyNeedMail)
		return true
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		c.fail(&reply.Reply{Code: 501, Status: "5.5.4", Text: "Syntax: RCPT TO:<address>"})
		return true
	}
	to, params, err := ParsePathArg(rest, c.sess.UTF8, true)
	if err == nil && to.IsNull() {
		err = ErrPathSyntax
	}
	if err != nil {
		c.fail(pathError(err, "recipient"))
		return true
	}
	if len(params) > 0 {
		c.fail(&reply.Reply{Code: 555, Status: "5.5.4", Text: "Unsupported option: " + params[0].Key})
		return true
	}
	// sendmail's BadRcptThrottle: once this many recipients of the
	// transaction were refused, every further RCPT waits a second.
	if t := c.cfg.BadRcptThrottle; t > 0 && c.badRcpts >= t {
		if !c.throttled {
			c.throttled = true
			c.note(reason.BadRcptThrottle, "Possible SMTP RCPT flood, throttling.", "client", c.clientName())
		}
		c.flush()
		select {
		case <-time.After(time.Second):
		case <-c.ctx.Done():
		}
	}
	if m := c.cfg.MaxRcpts; m > 0 && len(c.sess.Rcpts) >= m {
		c.cfg.Observer.Refused(reason.TooManyRcpts, c.sess.Remote.Addr(), c.sess.Host)
		c.reply(replyTooMany)
		return true
	}
	r := c.sess.Defer
	if r == nil {
		r = c.h.Rcpt(&c.sess, to)
	}
	if r != nil && r.Failed() {
		c.badRcpts++
		c.badTotal++
		c.reply(r)
		if m := c.cfg.MaxBadRcpts; m > 0 && c.badTotal >= m {
			// A dictionary attack: enough names tried, the rest need
			// not be answered.
			c.note(reason.TooManyBadRcpts, "too many invalid recipients from "+c.clientName()+", disconnecting", "refused", c.badTotal)
			c.reply(&reply.Reply{Code: 421, Status: "4.7.0", Text: c.cfg.Hostname + " Error: too many invalid recipients"})
			return false
		}
		return true
	}
	if r == nil {
		r = &reply.Reply{Code: 250, Status: "2.1.5", Text: "Ok"}
	}
	c.reply(r)
	c.sess.Rcpts = append(c.sess.Rcpts, to)
	c.phase = phaseDataInit
	return true
}

// data runs DATA; false ends the session (the client is gone or timed out).
func (c *conn) data(arg string) bool {
	switch {
	case arg != "":
		c.fail(&reply.Reply{Code: 501, Status: "5.5.4", Text: "Syntax: DATA"})
		return true
	case !c.sess.inTx:
		c.fail(replyNeedMail)
		return true
	case len(c.sess.Rcpts) == 0:
		c.fail(replyNeedRcpt)
		return true
	}
	c.reply(replyData)
	if !c.flush() {
		return false
	}
	t := &c.cfg.Timeouts
	now := time.Now()
	end := now.Add(t.DataFinal)
	block := t.DataBlock
	if st := c.srv.stress.Load(); st != nil {
		block = tighter(block, st.CommandTimeout)
	}
	deadline := func() time.Time {
		if d := time.Now().Add(block); d.Before(end) {
			return d
		}
		return end
	}
	c.setReadDeadline(deadline())
	var renewed int64
	limit, stop := c.cfg.MaxMessageSize, int64(0)
	if limit > 0 {
		stop = limit + sizeMargin
	}
	dr := NewDataReader(c.br, limit, stop, func(n int64) {
		if n-renewed >= blockSize {
			renewed = n
			c.setReadDeadline(deadline())
		}
	})
	r := c.h.Data(&c.sess, dr)
	if err := dr.Drain(); err != nil {
		c.resetTx()
		if err == ErrCut {
			c.note(reason.TooBig, "message far over the size limit from "+c.clientName()+", disconnecting", "size", dr.Size(), "limit", limit)
			c.reply(replyTooBig)
		} else {
			phase := "datablock"
			if !time.Now().Before(end) {
				phase = "datafinal"
			}
			c.readFailed(err, phase)
		}
		return false
	}
	if pe := dr.ProtocolError(); pe != nil {
		r = dataErrorReply(pe)
		c.note(dataErrorReason(pe), "message refused from "+c.clientName()+": "+pe.Error(), "size", dr.Size())
	} else if r == nil {
		r = &reply.Reply{Code: 451, Status: "4.3.0", Text: "Error: message not stored"}
	}
	if r.Code == 250 {
		c.messages++
	}
	c.reply(r)
	c.resetTx()
	c.phase = phaseQuit
	return true
}

func dataErrorReply(err error) *reply.Reply {
	switch err {
	case ErrBareLF:
		return replyBareLF
	case ErrBareCR:
		return replyBareCR
	case ErrNUL:
		return replyNULData
	case ErrLineTooLong:
		return replyLongData
	case ErrTooBig:
		return replyTooBig
	}
	return &reply.Reply{Code: 554, Status: "5.6.0", Text: "Message refused"}
}

func dataErrorReason(err error) reason.Reason {
	switch err {
	case ErrBareLF:
		return reason.BareLF
	case ErrBareCR:
		return reason.BareCR
	case ErrNUL:
		return reason.NUL
	case ErrLineTooLong:
		return reason.LineTooLong
	}
	return reason.TooBig
}

func (c *conn) starttls(arg string) bool {
	switch {
	case c.cfg.TLS == nil:
		c.fail(replyNoTLS)
		return true
	case c.sess.TLS != nil:
		c.fail(replyTLSAgain)
		return true
	case arg != "":
		c.fail(&reply.Reply{Code: 501, Status: "5.5.4", Text: "Syntax: STARTTLS"})
		return true
	}
	c.reply(replyTLSReady)
	if !c.flush() {
		return false
	}
	if n := c.br.Buffered(); n > 0 {
		// Plaintext pipelined after STARTTLS must not be taken as if it
		// came over TLS (CVE-2011-0411): drop it.
		c.note(reason.StartTLSInjection, "discarding plaintext sent after STARTTLS by "+c.clientName(), "octets", n)
		c.br.Discard(n)
	}
	tc := tls.Server(c.nc, c.cfg.TLS)
	d := time.Now().Add(c.cfg.Timeouts.StartTLS)
	c.nc.SetWriteDeadline(d)
	c.setReadDeadline(d)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		// Only this client loses its connection. A session limit met in
		// the handshake is logged as such; no reply, since the client
		// expects TLS records, not a plaintext 421.
		why := reason.TLS
		switch {
		case errors.Is(err, errSessionBytes):
			why = reason.SessionBytes
		case isTimeout(err) && c.atEnd:
			why = reason.SessionTime
		}
		c.note(why, "TLS handshake failed with "+c.clientName(), "err", err.Error())
		return false
	}
	c.nc.SetDeadline(time.Time{})
	c.nc = tc
	c.ir.has = false
	c.br.Reset(&c.ir)
	st := tc.ConnectionState()
	c.sess.TLS = &st
	// RFC 3207 4.2: forget everything learnt before TLS.
	c.resetTx()
	c.sess.Helo, c.sess.ESMTP = "", false
	c.phase = phaseHelo
	return true
}

// meteredConn counts the octets the client sends, as they arrive on the
// connection (so TLS records and handshakes count too), and fails every
// read once more than max (0 = no limit) have arrived: a client cannot make
// the session read more than max+1 octets, whatever the phase.
type meteredConn struct {
	net.Conn
	n, max int64 // only the session's goroutine reads
}

func (m *meteredConn) Read(p []byte) (int, error) {
	if m.max > 0 {
		if m.n > m.max {
			return 0, errSessionBytes
		}
		if rest := m.max - m.n + 1; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	n, err := m.Conn.Read(p)
	m.n += int64(n)
	return n, err
}

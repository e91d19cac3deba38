package deliver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/spool"
)

// Timeouts bound each wait of the relay client, named as in the [timeouts]
// section of the configuration (sendmail's Timeout.* options). Every field
// must be set: the configuration resolves the ones left at 0 to RFC 5321
// §4.5.3.2's minimums (config.Timeouts.RelaySide), and NewRelay refuses a
// zero wait rather than invent a second default here.
type Timeouts struct {
	Connect   time.Duration // TCP or unix-socket connect
	Initial   time.Duration // the 220 greeting
	Helo      time.Duration // reply to EHLO/HELO
	Lhlo      time.Duration // reply to LHLO
	StartTLS  time.Duration // STARTTLS reply and TLS handshake
	Mail      time.Duration // reply to MAIL
	Rcpt      time.Duration // reply to each RCPT
	DataInit  time.Duration // reply to DATA
	DataBlock time.Duration // each write of the body
	DataFinal time.Duration // reply to the final dot (each reply, for LMTP)
	Quit      time.Duration // reply to QUIT
}

func (t Timeouts) check() error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"connect", t.Connect}, {"initial", t.Initial}, {"helo", t.Helo}, {"lhlo", t.Lhlo},
		{"starttls", t.StartTLS}, {"mail", t.Mail}, {"rcpt", t.Rcpt}, {"datainit", t.DataInit},
		{"datablock", t.DataBlock}, {"datafinal", t.DataFinal}, {"quit", t.Quit}} {
		if f.d <= 0 {
			return fmt.Errorf("relay: timeout %s is not set", f.name)
		}
	}
	return nil
}

// Relay delivers to one downstream SMTP or LMTP server. It is safe for
// concurrent use. Without WithPool it opens a new connection for each
// Deliver call and says QUIT at its end; with it, connections are kept
// open and reused (see WithPool), and Close ends them.
//
// When a TCP downstream offers STARTTLS, Relay uses it without verifying the
// certificate (opportunistic TLS, RFC 7435: the relay target is named by the
// operator, and refusing to deliver over a self-signed certificate would
// only push mail back to plaintext). If the TLS handshake fails, the
// connection is made again, once, in plaintext.
type Relay struct {
	url      string
	network  string // "tcp" or "unix"
	addr     string
	host     string // for TLS SNI
	lmtp     bool
	hostname string
	t        Timeouts
	logger   *slog.Logger
	pool     *relayPool // nil: a connection per delivery
}

// NewRelay returns a Relay for rawURL, which is smtp://host[:port] (port 25
// by default), lmtp://host:port (port 24 by default) or lmtp+unix:///path.
// hostname is what the client announces in EHLO or LHLO. A nil logger
// discards.
func NewRelay(rawURL, hostname string, t Timeouts, logger *slog.Logger, opts ...RelayOption) (*Relay, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("relay %q: %w", rawURL, err)
	}
	if hostname == "" {
		return nil, errors.New("relay: empty client host name")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	r := &Relay{url: rawURL, hostname: hostname, t: t, logger: logger}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("relay %q: user, query and fragment are not supported", rawURL)
	}
	switch u.Scheme {
	case "smtp", "lmtp":
		if u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("relay %q: want %s://host:port", rawURL, u.Scheme)
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"smtp": "25", "lmtp": "24"}[u.Scheme]
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("relay %q: bad port %q", rawURL, port)
		}
		r.network, r.host = "tcp", u.Hostname()
		r.addr = net.JoinHostPort(r.host, port)
		r.lmtp = u.Scheme == "lmtp"
	case "lmtp+unix":
		if u.Host != "" || u.Path == "" {
			return nil, fmt.Errorf("relay %q: want lmtp+unix:///path", rawURL)
		}
		r.network, r.addr, r.lmtp = "unix", u.Path, true
	default:
		return nil, fmt.Errorf("relay %q: unknown scheme %q (want smtp, lmtp or lmtp+unix)", rawURL, u.Scheme)
	}
	for _, o := range opts {
		o(r)
	}
	if r.pool != nil && (cap(r.pool.slots) < 1 || r.pool.idle <= 0) {
		return nil, fmt.Errorf("relay %q: pool of %d connections kept %v: want at least one, for a while", rawURL, cap(r.pool.slots), r.pool.idle)
	}
	return r, nil
}

// String returns the relay's URL, for logs.
func (r *Relay) String() string { return r.url }

// Deliver implements Deliverer. It calls decided right after the
// downstream's last reply to the transaction is read, before QUIT.
func (r *Relay) Deliver(ctx context.Context, env *spool.Envelope, body func() (io.ReadCloser, error), rcpts []int, decided func([]Result)) []Result {
	t := newTxn(env, rcpts)
	t.onDecided = decided
	t.finish(r.attempt(ctx, t, body))
	return t.res
}

// attempt runs one connection's worth of the delivery, recording each
// recipient's fate in t as soon as it is known.
func (r *Relay) attempt(ctx context.Context, t *txn, body func() (io.ReadCloser, error)) error {
	if r.pool != nil {
		return r.attemptPooled(ctx, t, body)
	}
	c, err := r.open(ctx, "id", t.env.ID)
	if err != nil {
		return err
	}
	defer c.close()
	err = r.transaction(c, t, c.ext, body)
	if err == nil {
		r.decided(t)
		// QUIT is a courtesy, and a failing one changes nothing.
		c.cmd(r.t.Quit, "QUIT")
	}
	return err
}

// attemptPooled is attempt on a connection of the pool, which goes back
// to it afterwards unless anything went wrong.
func (r *Relay) attemptPooled(ctx context.Context, t *txn, body func() (io.ReadCloser, error)) error {
	c, err := r.get(ctx, t.env.ID)
	if err != nil {
		return err
	}
	err = r.transaction(c.conn, t, c.ext, body)
	if err != nil {
		r.discard(c)
		return err
	}
	r.decided(t)
	r.put(c)
	return nil
}

// decided settles every recipient, all of whom have their reply. Until
// the queue has recorded them, a crash would deliver the message again,
// so that comes first, before QUIT or keeping the connection.
func (r *Relay) decided(t *txn) {
	t.finish(nil)
	if t.onDecided != nil {
		t.onDecided(t.res)
	}
}

// txn tracks the recipients of one Deliver call.
type txn struct {
	env     *spool.Envelope
	rcpts   []int
	res     []Result
	decided []bool
	// onDecided is Deliver's decided: told the results once every
	// recipient has its reply.
	onDecided func([]Result)
}

func newTxn(env *spool.Envelope, rcpts []int) *txn {
	return &txn{env: env, rcpts: rcpts, res: make([]Result, len(rcpts)), decided: make([]bool, len(rcpts))}
}

func (t *txn) set(i int, rep reply) {
	st := Deferred
	switch rep.class() {
	case 2:
		st = Delivered
	case 5:
		st = Failed
	}
	t.res[i], t.decided[i] = Result{Status: st, Reply: rep.String()}, true
}

func (t *txn) setAll(rep reply) {
	for i := range t.res {
		if !t.decided[i] {
			t.set(i, rep)
		}
	}
}

// finish defers every recipient still undecided, citing err.
func (t *txn) finish(err error) {
	msg := "connection lost"
	if err != nil {
		msg = err.Error()
	}
	for i := range t.res {
		if !t.decided[i] {
			t.res[i] = Result{Status: Deferred, Reply: localReply(451, "4.4.2", msg)}
		}
	}
}

// localReply phrases a failure found on this side as an SMTP reply.
func localReply(code int, enhanced, text string) string {
	return reply{code: code, lines: []string{enhanced + " " + text}}.String()
}

// transaction sends MAIL, RCPT, DATA and the body. With PIPELINING the
// envelope and DATA go out in one write (RFC 2920); without it each command
// waits for its reply, and DATA is sent only if a recipient was accepted.
func (r *Relay) transaction(c *conn, t *txn, ext map[string]string, body func() (io.ReadCloser, error)) error {
	env := t.env
	if limit, err := strconv.ParseInt(ext["SIZE"], 10, 64); err == nil && limit > 0 && env.Size > limit {
		t.setAll(reply{code: 552, lines: []string{fmt.Sprintf("5.3.4 message size %d exceeds the limit of %s (%d)", env.Size, r.url, limit)}})
		return nil
	}
	mail := "MAIL FROM:<" + env.From + ">"
	if _, ok := ext["SIZE"]; ok && env.Size > 0 {
		mail += " SIZE=" + strconv.FormatInt(env.Size, 10)
	}
	if env.SMTPUTF8 {
		if _, ok := ext["SMTPUTF8"]; ok {
			mail += " SMTPUTF8"
		} else if !isASCII(env.From) || t.anyNonASCII() {
			t.setAll(reply{code: 553, lines: []string{"5.6.7 " + r.url + " does not support SMTPUTF8, needed for this message"}})
			return nil
		}
	}
	if !validAddr(env.From) {
		t.setAll(reply{code: 553, lines: []string{"5.1.7 unusable sender address"}})
		return nil
	}
	// Only recipients that can be sent are; sent[k] is the index into
	// t.rcpts of the k-th RCPT command.
	var sent []int
	var rcptCmds []string
	for i, ri := range t.rcpts {
		addr := env.Rcpts[ri].Addr
		if !validAddr(addr) || addr == "" {
			t.set(i, reply{code: 553, lines: []string{"5.1.3 unusable recipient address"}})
			continue
		}
		sent = append(sent, i)
		rcptCmds = append(rcptCmds, "RCPT TO:<"+addr+">")
	}
	if len(sent) == 0 {
		return nil
	}
	_, pipelining := ext["PIPELINING"]

	c.send(r.t.Mail, mail)
	if pipelining {
		c.send(r.t.Mail, rcptCmds...)
		c.send(r.t.Mail, "DATA")
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("%s: sending MAIL: %w", r.url, err)
	}
	rep, err := c.read(r.t.Mail)
	if err != nil {
		return fmt.Errorf("%s: MAIL: %w", r.url, err)
	}
	if rep.class() != 2 {
		// Pipelined replies to RCPT and DATA may follow; the connection
		// is closed without reading them.
		c.unclean = c.unclean || pipelining
		t.setAll(rep)
		return nil
	}

	var accepted []int // indices into t.rcpts, in RCPT order
	for k, cmd := range rcptCmds {
		i := sent[k]
		if !pipelining {
			c.send(r.t.Rcpt, cmd)
			if err := c.flush(); err != nil {
				return fmt.Errorf("%s: sending RCPT: %w", r.url, err)
			}
		}
		rep, err := c.read(r.t.Rcpt)
		if err != nil {
			return fmt.Errorf("%s: RCPT: %w", r.url, err)
		}
		if rep.class() == 2 {
			accepted = append(accepted, i)
		} else {
			t.set(i, rep)
		}
	}
	if len(accepted) == 0 && !pipelining {
		return nil
	}
	if !pipelining {
		c.send(r.t.DataInit, "DATA")
		if err := c.flush(); err != nil {
			return fmt.Errorf("%s: sending DATA: %w", r.url, err)
		}
	}
	rep, err = c.read(r.t.DataInit)
	if err != nil {
		return fmt.Errorf("%s: DATA: %w", r.url, err)
	}
	if rep.code != 354 {
		for _, i := range accepted {
			t.set(i, rep)
		}
		return nil
	}
	if len(accepted) == 0 {
		// The server let DATA through with no recipient; RFC 2920 §3.1
		// says to end it with an empty message.
		c.send(r.t.DataFinal, ".")
		if c.flush() != nil {
			c.unclean = true
		}
		c.read(r.t.DataFinal) // an error marks it unclean
		return nil
	}

	rc, err := body()
	if err != nil {
		return fmt.Errorf("opening spooled body: %w", err)
	}
	c.writeTimeout = r.t.DataBlock
	err = copyDotStuffed(c.bw, rc)
	rc.Close()
	if err == nil {
		err = c.flush()
	}
	if err != nil {
		// Closing the connection without the final dot makes the server
		// discard what it got.
		return fmt.Errorf("%s: sending body: %w", r.url, err)
	}

	if !r.lmtp {
		rep, err := c.read(r.t.DataFinal)
		if err != nil {
			return fmt.Errorf("%s: reply to end of data: %w", r.url, err)
		}
		for _, i := range accepted {
			t.set(i, rep)
		}
		return nil
	}
	// LMTP (RFC 2033 §4.2): one reply per accepted recipient, in order.
	for _, i := range accepted {
		rep, err := c.read(r.t.DataFinal)
		if err != nil {
			return fmt.Errorf("%s: LMTP reply for <%s>: %w", r.url, env.Rcpts[t.rcpts[i]].Addr, err)
		}
		t.set(i, rep)
	}
	return nil
}

func (t *txn) anyNonASCII() bool {
	for _, ri := range t.rcpts {
		if !isASCII(t.env.Rcpts[ri].Addr) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// validAddr reports whether an address can be put in a MAIL or RCPT
// command as it is: the null path, or a mailbox in the syntax the server
// itself accepts (quoted local parts included), which is the form the
// session stored it in. One parser on both sides: what got 250 at RCPT is
// what is sent on.
func validAddr(s string) bool {
	if s == "" || strings.EqualFold(s, "postmaster") { // RFC 5321 4.5.1's bare <Postmaster>
		return true
	}
	_, err := smtpd.ParseMailbox(s)
	return err == nil
}

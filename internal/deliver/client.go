package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// The client side shared by Relay and Prober (both keep connections open
// between uses): dialing, the greeting, EHLO/LHLO, opportunistic STARTTLS
// and the reading of replies.

// errTLS marks a failed STARTTLS negotiation, after which the connection is
// made again without TLS.
var errTLS = errors.New("STARTTLS failed")

// conn is one client connection. Every wait sets its own deadline, clamped
// by the context it is bound to; cancelling that context interrupts
// whatever wait is running. A connection kept open between uses is bound
// to each user's context in turn.
type conn struct {
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	ext map[string]string // the extensions of the last EHLO/LHLO reply
	// unclean is set when the connection's state is not known to be
	// between transactions: a 421 read (the server is closing it), or
	// replies left unread. Such a connection is not used again.
	unclean bool

	mu           sync.Mutex // orders deadline changes against cancellation
	ctx          context.Context
	stop         func() bool // unregisters the interrupt on ctx
	writeTimeout time.Duration
}

func newConn(nc net.Conn) *conn {
	c := &conn{nc: nc}
	c.br = bufio.NewReader(nc)
	c.bw = bufio.NewWriterSize(c, 32<<10)
	return c
}

// bind makes ctx the bound of every wait until unbind.
func (c *conn) bind(ctx context.Context) {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	c.stop = context.AfterFunc(ctx, c.interrupt)
}

// unbind undoes bind. It reports false when the context ended first: the
// interrupt may then have cut a wait short, and the connection is no
// longer fit for use.
func (c *conn) unbind() bool {
	if c.stop == nil {
		return true
	}
	ok := c.stop()
	c.stop = nil
	return ok
}

func (c *conn) close() {
	c.unbind()
	c.nc.Close()
}

func (c *conn) deadline(d time.Duration) time.Time {
	dl := time.Now().Add(d)
	if cd, ok := c.ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	return dl
}

func (c *conn) setReadDeadline(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ctx.Err(); err != nil {
		return err
	}
	return c.nc.SetReadDeadline(c.deadline(d))
}

// Write lets bufio.Writer flush through the connection with a fresh
// deadline for every block, which is what Timeout.datablock means.
func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if err := c.ctx.Err(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	err := c.nc.SetWriteDeadline(c.deadline(c.writeTimeout))
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.nc.Write(p)
}

func (c *conn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nc.SetDeadline(time.Unix(1, 0))
}

func (c *conn) read(d time.Duration) (reply, error) {
	if err := c.setReadDeadline(d); err != nil {
		return reply{}, err
	}
	rep, err := readReply(c.br)
	if err != nil || rep.code == 421 {
		c.unclean = true
	}
	return rep, err
}

// send writes commands (unflushed, so that pipelined ones go out in one
// write) with the write timeout d.
func (c *conn) send(d time.Duration, lines ...string) {
	c.writeTimeout = d
	for _, l := range lines {
		c.bw.WriteString(l)
		c.bw.WriteString("\r\n")
	}
}

func (c *conn) flush() error { return c.bw.Flush() }

// cmd sends one command and waits up to d for its reply.
func (c *conn) cmd(d time.Duration, line string) (reply, error) {
	c.send(d, line)
	if err := c.flush(); err != nil {
		return reply{}, err
	}
	return c.read(d)
}

// open connects to the downstream and takes the connection through the
// greeting, EHLO or LHLO and, over TCP when the server offers it, STARTTLS.
// When STARTTLS fails it connects again and stays in plaintext (see
// Relay); logArgs go into the warning that says so. The connection is
// returned bound to ctx, ready for MAIL.
func (r *Relay) open(ctx context.Context, logArgs ...any) (*conn, error) {
	c, err := r.dial(ctx, true)
	if errors.Is(err, errTLS) {
		r.logger.Warn("relay: STARTTLS failed, retrying in plaintext", append(logArgs, "relay", r.url, "err", err)...)
		c, err = r.dial(ctx, false)
	}
	return c, err
}

func (r *Relay) dial(ctx context.Context, useTLS bool) (*conn, error) {
	d := net.Dialer{Timeout: r.t.Connect}
	nc, err := d.DialContext(ctx, r.network, r.addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", r.url, err)
	}
	c := newConn(nc)
	c.bind(ctx)
	if err := r.greet(c, useTLS); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (r *Relay) greet(c *conn, useTLS bool) error {
	greet, err := c.read(r.t.Initial)
	if err != nil {
		return fmt.Errorf("%s: reading greeting: %w", r.url, err)
	}
	if greet.class() != 2 {
		// A server refusing to talk (even with 554) is treated as a
		// temporary condition, as Postfix does by default
		// (smtp_skip_5xx_greeting): it is the whole host, not the message.
		return fmt.Errorf("%s: greeting: %s", r.url, greet)
	}
	if c.ext, err = r.hello(c); err != nil {
		return err
	}
	if _, ok := c.ext["STARTTLS"]; ok && useTLS && r.network == "tcp" {
		if c.ext, err = r.startTLS(c); err != nil {
			return err
		}
	}
	return nil
}

// hello sends LHLO, or EHLO falling back to HELO, and returns the
// extensions the server announced.
func (r *Relay) hello(c *conn) (map[string]string, error) {
	if r.lmtp {
		rep, err := c.cmd(r.t.Lhlo, "LHLO "+r.hostname)
		if err != nil {
			return nil, fmt.Errorf("%s: LHLO: %w", r.url, err)
		}
		if rep.class() != 2 {
			return nil, fmt.Errorf("%s: LHLO: %s", r.url, rep)
		}
		return rep.extensions(), nil
	}
	rep, err := c.cmd(r.t.Helo, "EHLO "+r.hostname)
	if err != nil {
		return nil, fmt.Errorf("%s: EHLO: %w", r.url, err)
	}
	if rep.class() == 2 {
		return rep.extensions(), nil
	}
	if rep.class() == 5 {
		rep, err = c.cmd(r.t.Helo, "HELO "+r.hostname)
		if err != nil {
			return nil, fmt.Errorf("%s: HELO: %w", r.url, err)
		}
		if rep.class() == 2 {
			return map[string]string{}, nil
		}
	}
	return nil, fmt.Errorf("%s: EHLO: %s", r.url, rep)
}

func (r *Relay) startTLS(c *conn) (map[string]string, error) {
	rep, err := c.cmd(r.t.StartTLS, "STARTTLS")
	if err != nil {
		return nil, fmt.Errorf("%s: STARTTLS: %w", r.url, err)
	}
	if rep.code != 220 {
		return nil, fmt.Errorf("%w: %s: %s", errTLS, r.url, rep)
	}
	cfg := &tls.Config{
		// Opportunistic: see the Relay doc comment.
		InsecureSkipVerify: true,
		ServerName:         r.host,
		MinVersion:         tls.VersionTLS12,
	}
	tc := tls.Client(c.nc, cfg)
	c.mu.Lock()
	c.nc.SetDeadline(c.deadline(r.t.StartTLS))
	c.nc = tc
	c.mu.Unlock()
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errTLS, r.url, err)
	}
	c.br.Reset(tc)
	c.bw.Reset(c)
	return r.hello(c)
}

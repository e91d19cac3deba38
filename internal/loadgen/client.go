package loadgen

import (
	"bufio"
	"context"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// A client is one SMTP session.
type client struct {
	conn       *net.TCPConn
	r          *textproto.Reader
	w          *bufio.Writer
	timeout    time.Duration
	pipelining bool // the server offered it and we were asked to use it

	// broken is the error that left the session unusable after the
	// outcome of a message was already decided, such as a failed RSET.
	broken error
}

// A step names the command whose reply decided an outcome, for counting
// replies by stage ("RCPT 450").
type step string

const (
	stepConnect step = "CONNECT"
	stepEHLO    step = "EHLO"
	stepHELO    step = "HELO"
	stepMail    step = "MAIL"
	stepRcpt    step = "RCPT"
	stepData    step = "DATA"
	stepDot     step = "."
)

// A verdict is how one exchange ended.
type verdict struct {
	step step
	code int   // the deciding reply; 0 when err is set
	err  error // network or protocol error; the session is unusable
}

// ok reports whether the reply was positive.
func (v verdict) ok() bool { return v.err == nil && v.code/100 == 2 }

// dead reports whether the session cannot go on: after a network error, or
// a 421, which RFC 5321 §3.8 says the server sends just before it closes.
func (v verdict) dead() bool { return v.err != nil || v.code == 421 }

// dialSMTP connects, reads the greeting and introduces itself with EHLO
// (HELO if EHLO is refused). On anything but success the connection is
// closed and the verdict says why.
func dialSMTP(ctx context.Context, pool *AddrPool, addr, ehlo string, pipelining bool, timeout time.Duration) (*client, verdict) {
	conn, err := dial(ctx, pool, addr, timeout)
	if err != nil {
		return nil, verdict{step: stepConnect, err: err}
	}
	c := &client{
		conn:    conn,
		r:       textproto.NewReader(bufio.NewReader(conn)),
		w:       bufio.NewWriter(conn),
		timeout: timeout,
	}
	c.deadline()
	v := c.expect(stepConnect, 220)
	if !v.ok() {
		abort(conn)
		return nil, v
	}
	ext, v := c.command(stepEHLO, "EHLO "+ehlo)
	if !v.ok() && v.err == nil && v.code/100 == 5 {
		_, v = c.command(stepHELO, "HELO "+ehlo)
		ext = ""
	}
	if !v.ok() {
		abort(conn)
		return nil, v
	}
	c.pipelining = pipelining && hasExtension(ext, "PIPELINING")
	return c, v
}

// hasExtension reports whether an EHLO reply text (lines joined by "\n",
// as ReadResponse returns them) lists the keyword. The first line is the
// server's name, not an extension.
func hasExtension(reply, keyword string) bool {
	_, rest, _ := strings.Cut(reply, "\n")
	for line := range strings.SplitSeq(rest, "\n") {
		word, _, _ := strings.Cut(line, " ")
		if strings.EqualFold(word, keyword) {
			return true
		}
	}
	return false
}

// deadline gives the next exchange the configured time.
func (c *client) deadline() { c.conn.SetDeadline(time.Now().Add(c.timeout)) }

// reply reads one complete, possibly multi-line, reply.
func (c *client) reply(s step) verdict {
	code, _, err := c.r.ReadResponse(0)
	if err != nil {
		return verdict{step: s, err: err}
	}
	return verdict{step: s, code: code}
}

// expect reads a reply and turns a code of the wrong class into a protocol
// error, except failures, which are verdicts in their own right.
func (c *client) expect(s step, want int) verdict {
	v := c.reply(s)
	if v.err == nil && v.code != want && v.code/100 != 4 && v.code/100 != 5 {
		v.err = errProtocol
	}
	return v
}

// command sends one line and reads its reply, returning the reply's text
// too.
func (c *client) command(s step, line string) (string, verdict) {
	c.deadline()
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return "", verdict{step: s, err: err}
	}
	code, msg, err := c.r.ReadResponse(0)
	if err != nil {
		return "", verdict{step: s, err: err}
	}
	return msg, verdict{step: s, code: code}
}

// send writes raw command bytes and flushes them.
func (c *client) send(p ...[]byte) error {
	for _, b := range p {
		c.w.Write(b)
	}
	return c.w.Flush()
}

// transact sends one message and returns the verdict that decided it: the
// reply to the final dot when the message got that far, or else the first
// refusal.
func (c *client) transact(e *envelope) verdict {
	c.deadline()
	if c.pipelining {
		return c.transactPipelined(e)
	}
	if err := c.send(e.mail); err != nil {
		return verdict{step: stepMail, err: err}
	}
	if v := c.expect(stepMail, 250); !v.ok() {
		return v
	}
	var refused verdict
	accepted := 0
	for _, r := range e.rcpts {
		if err := c.send(r); err != nil {
			return verdict{step: stepRcpt, err: err}
		}
		v := c.expect(stepRcpt, 250)
		switch {
		case v.ok():
			accepted++
		case v.dead():
			return v
		default:
			refused = v
		}
	}
	if accepted == 0 {
		return c.reset(refused)
	}
	if err := c.send([]byte("DATA\r\n")); err != nil {
		return verdict{step: stepData, err: err}
	}
	if v := c.expect(stepData, 354); v.err != nil || v.code != 354 {
		return c.reset(v)
	}
	return c.finish(e.data)
}

// transactPipelined sends MAIL, every RCPT and DATA in one write, as RFC
// 2920 allows, then reads their replies in order.
func (c *client) transactPipelined(e *envelope) verdict {
	c.w.Write(e.mail)
	for _, r := range e.rcpts {
		c.w.Write(r)
	}
	if err := c.send([]byte("DATA\r\n")); err != nil {
		return verdict{step: stepMail, err: err}
	}
	mail := c.expect(stepMail, 250)
	if mail.err != nil {
		return mail
	}
	var refused verdict
	accepted := 0
	for range e.rcpts {
		v := c.expect(stepRcpt, 250)
		switch {
		case v.err != nil:
			return v
		case v.ok():
			accepted++
		default:
			refused = v
		}
	}
	data := c.expect(stepData, 354)
	if data.err != nil {
		return data
	}
	good := mail.ok() && accepted > 0
	if data.code == 354 {
		// A server that says 354 after refusing every recipient still
		// waits for the dot (RFC 2920 §3.1); send nothing else.
		payload := e.data
		if !good {
			payload = []byte(".\r\n")
		}
		final := c.finish(payload)
		if good {
			return final
		}
		if final.err != nil {
			c.broken = final.err
		}
	}
	switch {
	case !mail.ok():
		// No transaction was opened; nothing to reset.
		return mail
	case accepted == 0:
		return c.reset(refused)
	case data.code != 354:
		return c.reset(data)
	}
	return verdict{step: stepData, err: errProtocol}
}

// finish sends the message content, dot included, and reads the final
// reply.
func (c *client) finish(data []byte) verdict {
	c.deadline()
	if err := c.send(data); err != nil {
		return verdict{step: stepDot, err: err}
	}
	return c.expect(stepDot, 250)
}

// reset ends a transaction the server refused half-way with RSET, and
// returns v, the refusal. If RSET fails the session is marked broken.
func (c *client) reset(v verdict) verdict {
	if v.dead() {
		return v
	}
	if _, rv := c.command("RSET", "RSET"); rv.err != nil {
		c.broken = rv.err
	} else if !rv.ok() {
		c.broken = errProtocol
	}
	return v
}

// quit ends the session politely and closes the connection. With wait
// false it sends QUIT and closes at once, as Postfix's smtp client does by
// default (smtp_skip_quit_response = yes): the server has nothing more to
// say that matters, and some (Exim) hold the 221 until the client closes
// or 200 ms have passed.
func (c *client) quit(wait bool) error {
	if !wait {
		err := c.send([]byte("QUIT\r\n"))
		abort(c.conn)
		return err
	}
	_, v := c.command("QUIT", "QUIT")
	abort(c.conn)
	return v.err
}

// close drops the connection without a word.
func (c *client) close() { abort(c.conn) }

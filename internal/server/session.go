package server

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/policy"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/spool"
)

// session is one connection's smtpd.Handler: it puts the envelope policy's
// verdicts (internal/policy) into replies, writes their log lines, and
// hands accepted messages to the store. It holds what admission decided
// about the client and the policy in force when the connection started.
type session struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	events  events
	cfg     *config.Config
	pol     *policy.Policy
	store   store
	newID   func() string
	probe   time.Duration // bounds one RCPT's probe of the downstream
	client  policy.Client
	tx      policy.Tx
	rcpts   []string // where the accepted recipients' mail goes, without repeats
	release func()   // admission's slots (max_daemon_children, ClientConn), held until the session ends
}

var (
	replyStorage   = &reply.Reply{Code: 452, Status: "4.3.1", Text: "Insufficient system storage"}
	replyDiscarded = &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok: discarded"}
)

func (x *session) Mail(s *smtpd.Session, from smtpd.Path, size int64) *reply.Reply {
	x.rcpts = x.rcpts[:0]
	v := x.pol.Mail(&x.client, &x.tx, from)
	return x.apply(&v)
}

func (x *session) Rcpt(s *smtpd.Session, to smtpd.Path) *reply.Reply {
	ctx, cancel := context.WithTimeout(s.Context(), x.probe)
	defer cancel()
	v := x.pol.Rcpt(ctx, &x.client, &x.tx, to)
	if v.Accepted() {
		for _, a := range v.Deliver {
			if !contains(x.rcpts, a) {
				x.rcpts = append(x.rcpts, a)
			}
		}
	}
	return x.apply(&v)
}

// apply writes the verdict's log line, one per refusal: fail2ban and grep
// key on the client's ip= and the reason=.
func (x *session) apply(v *policy.Verdict) *reply.Reply {
	if v.Reason != "" {
		x.events.Refused(v.Reason, x.client.Addr, x.client.Host)
	}
	if v.Log != "" {
		attrs := []any{"ip", x.client.Addr.String(), "reason", v.Reason}
		if v.Key != "" {
			attrs = append(attrs, "key", v.Key)
		}
		x.log.Info(v.Log, attrs...)
	}
	return v.Reply
}

func (x *session) Data(s *smtpd.Session, r io.Reader) *reply.Reply {
	if x.tx.Discard {
		io.Copy(io.Discard, r)
		x.events.Refused(reason.Discard, x.client.Addr, x.client.Host)
		x.log.Info("discarded message from "+x.client.Name(), "ip", x.client.Addr.String(), "reason", reason.Discard)
		return replyDiscarded
	}
	env := &spool.Envelope{
		ID:       x.newID(),
		From:     s.From.Mailbox(),
		Received: time.Now(),
		ClientIP: x.client.Addr.String(),
		Helo:     s.Helo,
		SMTPUTF8: s.UTF8,
	}
	for _, a := range x.rcpts {
		env.Rcpts = append(env.Rcpts, spool.Rcpt{Addr: a})
	}
	// The Received: header names the message by the ID of the 250 and of
	// every log line, so that its headers lead an admin to its log.
	received := s.Received(x.cfg.Hostname, env.ID, env.Received)
	body := &readErr{r: r}
	msg := &counter{r: io.MultiReader(strings.NewReader(received), body)}
	delivered, err := x.store.Store(env, msg)
	env.Size = msg.n
	if err != nil {
		if body.err != nil {
			return nil // the body was refused or the client left; smtpd replies
		}
		x.events.Refused(reason.Storage, x.client.Addr, x.client.Host)
		x.log.Error("cannot store message", "id", env.ID, "err", err.Error(), "reason", reason.Storage)
		io.Copy(io.Discard, r)
		return replyStorage
	}
	x.metrics.MessageAccepted(x.client.Addr, x.client.Host)
	x.log.Info("accepted", "id", env.ID, "session", s.ID, "ip", x.client.Addr.String(), "from", env.From, "rcpts", len(env.Rcpts), "size", env.Size)
	if delivered != "" {
		for _, rc := range env.Rcpts {
			x.metrics.Delivery(metrics.TransportMaildir, metrics.Delivered)
			x.log.Info("delivered", "id", env.ID, "rcpt", rc.Addr, "via", "maildir", "file", delivered)
		}
	}
	return &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok: queued as " + env.ID}
}

func (x *session) Reset(*smtpd.Session) {
	x.tx = policy.Tx{}
	x.rcpts = x.rcpts[:0]
}

func (x *session) Close(*smtpd.Session) { x.release() }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// counter counts what is read through it.
type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// readErr remembers a read error, to tell a refused body or a vanished
// client (smtpd replies) from a storage error (we reply 452).
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

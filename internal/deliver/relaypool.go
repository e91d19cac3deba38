package deliver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// A RelayOption changes how NewRelay sets up a Relay.
type RelayOption func(*Relay)

// WithPool has the Relay keep its connections to the downstream open
// between deliveries and reuse them: at most size connections exist at
// once (a Deliver that finds them all busy waits for one, as long as its
// context allows), and one unused for idle is closed. idle should be well
// below the downstream's own idle timeout (Postfix's smtpd_timeout is
// 300 s, but 10 s when it is under stress), or the downstream hangs up
// first and the next delivery pays for a check that fails and a new
// connection.
//
// A kept connection is checked with RSET before each reuse (RFC 5321
// §4.1.1.5; Postfix's SMTP client does the same with its cached
// connections): a connection the downstream closed meanwhile is found out
// before any part of a message is sent, and replaced. A connection that
// failed in any way, or whose state is unknown (a 421, replies left
// unread), is closed, never kept.
func WithPool(size int, idle time.Duration) RelayOption {
	return func(r *Relay) {
		r.pool = &relayPool{slots: make(chan struct{}, size), idle: idle}
	}
}

// Limits on one kept connection's use, so that a downstream's own limits
// end no delivery: Exim answers MAIL with 421 past
// smtp_accept_max_per_connection (1000 by default), and Postfix's SMTP
// client reuses a connection for at most 300 s
// (smtp_connection_reuse_time_limit), for the same reason.
const (
	maxDeliveriesPerConn = 100
	maxConnAge           = 300 * time.Second
)

// relayPool holds a Relay's idle connections.
type relayPool struct {
	slots chan struct{} // a token per connection in use: at most cap(slots)
	idle  time.Duration

	opened atomic.Int64 // connections opened, for tests

	mu     sync.Mutex
	conns  []*keptConn // idle, least recently used first
	closed bool
}

// keptConn is a connection with its use so far.
type keptConn struct {
	*conn
	opened     time.Time
	deliveries int
	timer      *time.Timer // closes it after idle unused
}

// get returns a connection bound to ctx, ready for MAIL: a kept one that
// answers RSET, or a new one. It holds a slot of the pool until put or
// discard.
func (r *Relay) get(ctx context.Context, id string) (*keptConn, error) {
	p := r.pool
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("no connection to %s free in time: %w", r.url, ctx.Err())
	}
	for {
		p.mu.Lock()
		var c *keptConn
		if n := len(p.conns); n > 0 {
			// The most recently used: the others are left to expire.
			c = p.conns[n-1]
			p.conns[n-1] = nil
			p.conns = p.conns[:n-1]
			c.timer.Stop()
		}
		p.mu.Unlock()
		if c == nil {
			break
		}
		c.bind(ctx)
		// Bounded like MAIL, the command it stands in front of.
		rep, err := c.cmd(r.t.Mail, "RSET")
		if err == nil && rep.class() == 2 {
			return c, nil
		}
		r.logger.Debug("relay: kept connection failed its check, closing it", "relay", r.url, "id", id, "reply", rep.String(), "err", err)
		c.close()
		if ctx.Err() != nil {
			<-p.slots
			return nil, ctx.Err()
		}
	}
	c, err := r.open(ctx, "id", id)
	if err != nil {
		<-p.slots
		return nil, err
	}
	p.opened.Add(1)
	return &keptConn{conn: c, opened: time.Now()}, nil
}

// put keeps c, whose transaction ended cleanly, for the next delivery, or
// closes it when it is worn out, no longer fit, or the pool is closed.
func (r *Relay) put(c *keptConn) {
	p := r.pool
	defer func() { <-p.slots }()
	c.deliveries++
	fit := c.unbind() && !c.unclean
	if !fit {
		c.close()
		return
	}
	if c.deliveries >= maxDeliveriesPerConn || time.Since(c.opened) >= maxConnAge {
		c.quit()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.quit()
		return
	}
	c.timer = time.AfterFunc(p.idle, func() { r.expire(c) })
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

// discard closes c, which failed, and frees its slot.
func (r *Relay) discard(c *keptConn) {
	c.close()
	<-r.pool.slots
}

// expire closes c if it is still idle.
func (r *Relay) expire(c *keptConn) {
	p := r.pool
	p.mu.Lock()
	i := -1
	for j, k := range p.conns {
		if k == c {
			i = j
		}
	}
	if i < 0 {
		p.mu.Unlock()
		return // taken for a delivery meanwhile
	}
	p.conns = append(p.conns[:i], p.conns[i+1:]...)
	p.mu.Unlock()
	c.quit()
}

// Close says QUIT on the connections kept idle and closes them; those in
// use are closed when their delivery ends. Deliver may still be called
// and then opens a connection of its own each time. A Relay without a
// pool has nothing to close.
func (r *Relay) Close() {
	p := r.pool
	if p == nil {
		return
	}
	p.mu.Lock()
	p.closed = true
	idle := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.timer.Stop()
		c.quit()
	}
}

// quit says QUIT, without waiting for the reply, and closes: the
// downstream then logs an orderly end rather than a lost connection.
func (c *conn) quit() {
	c.unbind()
	c.nc.SetWriteDeadline(time.Now().Add(quitWrite))
	c.nc.Write([]byte("QUIT\r\n"))
	c.nc.Close()
}

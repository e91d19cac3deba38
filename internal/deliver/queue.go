package deliver

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/reason"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/mxguard/mxguard/internal/spool"
)

// QueueConfig tunes a Queue. Zero fields take the defaults given.
type QueueConfig struct {
	Hostname      string           // Reporting-MTA of DSNs and domain of MAILER-DAEMON; default "localhost"
	QueueLifetime time.Duration    // give up and bounce after this long in the queue; default 5 days
	MinBackoff    time.Duration    // wait after the first failed attempt; default 1m
	MaxBackoff    time.Duration    // cap of the doubling wait; default 1h
	Workers       int              // messages delivered at the same time; default 4
	Metrics       *metrics.Metrics // counts each recipient's outcome; nil: nothing counted
}

func (c QueueConfig) withDefaults() QueueConfig {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.QueueLifetime <= 0 {
		c.QueueLifetime = 5 * 24 * time.Hour
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Minute
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Hour
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	return c
}

// Queue delivers the messages of a spool through a Deliverer: every
// message found at start, every message handed to Enqueue, and every
// bounce it makes itself. A message leaves the spool when each of its
// recipients is delivered or bounced. An attempt's outcome is recorded the
// moment the Deliverer knows it (see Deliverer's decided), which bounds
// what a crash can repeat: at most the attempts in flight, one per worker
// (the package documentation has the whole promise).
type Queue struct {
	sp        *spool.Spool
	d         Deliverer
	cfg       QueueConfig
	logger    *slog.Logger
	via       string // the Deliverer's name in log lines
	transport string // and its kind, for the metrics

	wake chan struct{} // a schedule change the Run loop may not know of

	mu   sync.Mutex
	heap schedHeap
	seq  uint64
	when map[string]uint64 // id → seq of its live heap entry; older entries are stale
	busy map[string]bool   // handed to a worker, not finished
}

// NewQueue returns a Queue; it does nothing until Run. A nil logger
// discards.
func NewQueue(sp *spool.Spool, d Deliverer, cfg QueueConfig, logger *slog.Logger) *Queue {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	via := fmt.Sprintf("%T", d)
	if s, ok := d.(fmt.Stringer); ok {
		via = s.String()
	}
	return &Queue{
		sp: sp, d: d, cfg: cfg.withDefaults(), logger: logger, via: via, transport: transportOf(d),
		wake: make(chan struct{}, 1),
		when: make(map[string]uint64),
		busy: make(map[string]bool),
	}
}

// transportOf names what d delivers by, as the metrics label it.
func transportOf(d Deliverer) string {
	switch d := d.(type) {
	case *Maildir:
		return metrics.TransportMaildir
	case *Relay:
		if d.lmtp {
			return metrics.TransportLMTP
		}
		return metrics.TransportSMTP
	}
	return "other"
}

// Enqueue asks for message id, just committed to the spool, to be
// delivered now. It never blocks. Messages that are not enqueued are found
// by the next Run at start.
func (q *Queue) Enqueue(id string) {
	q.schedule(id, time.Time{})
}

func (q *Queue) schedule(id string, at time.Time) {
	q.mu.Lock()
	q.scheduleLocked(id, at)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *Queue) scheduleLocked(id string, at time.Time) {
	q.seq++
	q.when[id] = q.seq
	heap.Push(&q.heap, schedEntry{at: at, id: id, seq: q.seq})
}

// nextLocked takes the first message due at now that no worker holds, or
// returns the time the next one is due (zero if none is scheduled).
func (q *Queue) nextLocked(now time.Time) (id string, next time.Time) {
	for q.heap.Len() > 0 {
		e := q.heap[0]
		if q.when[e.id] != e.seq {
			heap.Pop(&q.heap) // superseded by a later schedule
			continue
		}
		if q.busy[e.id] {
			// A worker has it; it reschedules the message itself if
			// anything is left.
			heap.Pop(&q.heap)
			delete(q.when, e.id)
			continue
		}
		if e.at.After(now) {
			return "", e.at
		}
		heap.Pop(&q.heap)
		delete(q.when, e.id)
		q.busy[e.id] = true
		return e.id, time.Time{}
	}
	return "", time.Time{}
}

// done releases id from its worker and, if retry is not zero, schedules its
// next attempt, both at once so that the Run loop never sees the message
// busy and due at the same time.
func (q *Queue) done(id string, retry time.Time) {
	q.mu.Lock()
	delete(q.busy, id)
	if !retry.IsZero() {
		q.scheduleLocked(id, retry)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends. It first schedules every message in the
// spool, then waits for each one's next try and for Enqueue. When ctx ends
// it cancels the deliveries in flight (their recipients are deferred and
// saved as such) and returns once they are finished. It returns an error
// only if the spool cannot be listed at start.
func (q *Queue) Run(ctx context.Context) error {
	ids, err := q.sp.Queued()
	if err != nil {
		return fmt.Errorf("deliver: listing the spool: %w", err)
	}
	q.mu.Lock()
	for _, id := range ids {
		// The worker reads NextTry from the envelope and puts the
		// message back if it is not yet due.
		q.scheduleLocked(id, time.Time{})
	}
	q.mu.Unlock()
	q.logger.Info("delivery queue started", "queued", len(ids), "via", q.via, "workers", q.cfg.Workers)

	work := make(chan string)
	var wg sync.WaitGroup
	for range q.cfg.Workers {
		wg.Go(func() {
			for id := range work {
				q.process(ctx, id)
			}
		})
	}
	defer func() {
		close(work)
		wg.Wait()
		q.logger.Info("delivery queue stopped")
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		id, next := q.nextLocked(time.Now())
		q.mu.Unlock()
		if id != "" {
			select {
			case work <- id:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		var timerC <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			timerC = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-q.wake:
		case <-timerC:
		}
	}
}

// process makes one delivery attempt for message id and records its
// outcome in the spool.
func (q *Queue) process(ctx context.Context, id string) {
	var retry time.Time
	defer func() { q.done(id, retry) }()

	env, err := q.sp.Envelope(id)
	if errors.Is(err, spool.ErrNotFound) {
		return
	}
	if errors.Is(err, spool.ErrCorrupt) {
		// Retrying cannot mend it: move it aside for the operator.
		if qerr := q.sp.Quarantine(id); qerr != nil {
			q.logger.Error("cannot move damaged message aside", "id", id, "err", qerr)
			retry = time.Now().Add(q.cfg.MaxBackoff)
			return
		}
		q.logger.Error("damaged message moved to the spool's corrupt/ directory", "id", id, "err", err)
		return
	}
	if err != nil {
		q.logger.Error("cannot read queued message", "id", id, "err", err)
		retry = time.Now().Add(q.cfg.MaxBackoff)
		return
	}
	if env.NextTry.After(time.Now()) {
		retry = env.NextTry
		return
	}
	var pending []int
	for i, rc := range env.Rcpts {
		if !rc.Done {
			pending = append(pending, i)
		}
	}
	if len(pending) == 0 {
		q.retire(id)
		return
	}
	if r := q.attempt(ctx, env, pending); r != nil {
		retry = *r
	}
}

// retire removes a finished message from the spool and reports whether it
// is gone.
func (q *Queue) retire(id string) bool {
	if err := q.sp.Remove(id); err != nil && !errors.Is(err, spool.ErrNotFound) {
		// It stays in the spool with every recipient to do: the next start
		// delivers it again.
		q.logger.Error("cannot remove finished message", "id", id, "err", err)
		return false
	}
	q.logger.Debug("message finished, removed from spool", "id", id)
	return true
}

// attempt delivers to the pending recipients, records the outcome in the
// spool, logs it and bounces what failed. It returns the time of the next
// attempt, or nil when the message is finished.
func (q *Queue) attempt(ctx context.Context, env *spool.Envelope, pending []int) *time.Time {
	body := func() (io.ReadCloser, error) {
		b, err := q.sp.Body(env.ID)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	o := &outcome{q: q, ctx: ctx, env: env, pending: pending}
	results := q.d.Deliver(ctx, env, body, pending, o.settle)
	o.settle(results) // unless the Deliverer did
	return o.finish()
}

// outcome is one attempt's result on its way into the spool. settle runs
// the moment every recipient is decided (from inside the Deliverer, for a
// relay before QUIT) and writes to the spool what must not wait; finish
// runs after the Deliverer has returned and does the rest: log lines,
// bounces, and the state write when settle had no reason to hurry.
type outcome struct {
	q       *Queue
	ctx     context.Context
	env     *spool.Envelope
	pending []int // indices into env.Rcpts

	settled          bool
	results          []Result // one per pending recipient
	failed, deferred []int    // indices into env.Rcpts
	interrupted      bool     // the queue is stopping
	now, deadline    time.Time
	next             time.Time // of the next attempt, when anything is left
	saved            bool      // the spool holds this outcome
}

func (o *outcome) settle(results []Result) {
	if o.settled {
		return
	}
	o.settled = true
	env := o.env
	delivered := false
	o.results = make([]Result, len(o.pending))
	for i, ri := range o.pending {
		r := Result{Status: Deferred, Reply: localReply(451, "4.3.0", "internal error: no result from deliverer")}
		if i < len(results) {
			r = results[i]
		}
		o.results[i] = r
		rc := &env.Rcpts[ri]
		rc.Status = r.Reply
		switch r.Status {
		case Delivered:
			rc.Done, delivered = true, true
		case Failed:
			o.failed = append(o.failed, ri)
		default:
			o.deferred = append(o.deferred, ri)
		}
	}
	// A stop of the queue that cut this attempt short is no failure of the
	// destination: it neither counts nor earns a back-off, so the next
	// start delivers at once.
	o.interrupted = o.ctx.Err() != nil
	if !o.interrupted {
		env.Attempts++
	}
	o.now = time.Now()
	o.deadline = env.Received.Add(o.q.cfg.QueueLifetime)
	o.next = o.now.Add(o.q.backoff(env.Attempts))
	if o.next.After(o.deadline) && o.deadline.After(o.now) {
		// One last attempt when the lifetime ends, then the bounce.
		o.next = o.deadline
	}
	env.NextTry = o.next
	if o.interrupted {
		o.next, env.NextTry = o.now, time.Time{}
	}
	if delivered {
		// The destination has the message for these recipients: until the
		// spool says so, a crash would hand it over again. Nothing else
		// comes first.
		o.save()
	}
}

// save records the envelope as it now is: the message is removed when no
// recipient is left, its state updated otherwise.
func (o *outcome) save() {
	o.saved = true
	if !anyLeft(o.env) {
		o.q.retire(o.env.ID)
		return
	}
	if err := o.q.sp.Update(o.env); err != nil {
		// The next attempt repeats this one's recipients; Maildir
		// notices what it already has, a relay may get a duplicate.
		o.q.logger.Error("cannot save delivery state", "id", o.env.ID, "err", err)
	}
}

// finish logs the outcome, bounces what failed or expired, saves what
// settle did not, and returns the time of the next attempt, or nil.
func (o *outcome) finish() *time.Time {
	q, env := o.q, o.env
	for i, ri := range o.pending {
		r, rc := o.results[i], env.Rcpts[ri]
		attrs := []any{"id", env.ID, "rcpt", rc.Addr, "via", q.via, "reply", r.Reply}
		switch r.Status {
		case Delivered:
			q.cfg.Metrics.Delivery(q.transport, metrics.Delivered)
			q.logger.Info("delivered", attrs...)
		case Failed:
			q.cfg.Metrics.Delivery(q.transport, metrics.Bounced)
			q.logger.Info("bounced", attrs...)
		}
	}
	expired := !o.now.Before(o.deadline)
	for _, ri := range o.deferred {
		rc := env.Rcpts[ri]
		if expired {
			q.cfg.Metrics.Delivery(q.transport, metrics.Bounced)
			q.logger.Info("bounced", "id", env.ID, "rcpt", rc.Addr, "via", q.via, "reply", rc.Status,
				"reason", reason.QueueLifetime, "age", o.now.Sub(env.Received).Round(time.Millisecond))
		} else {
			q.cfg.Metrics.Delivery(q.transport, metrics.Deferred)
			q.logger.Info("deferred", "id", env.ID, "rcpt", rc.Addr, "via", q.via, "reply", rc.Status, "attempts", env.Attempts)
		}
	}

	// The DSN is committed before the recipients are marked done: a crash
	// in between may send a bounce twice, but never loses one.
	bounced := false
	if len(o.failed) > 0 && q.bounce(env, o.failed, false) {
		markDone(env, o.failed)
		bounced = true
	}
	if expired && len(o.deferred) > 0 && q.bounce(env, o.deferred, true) {
		markDone(env, o.deferred)
		bounced = true
	}
	if !o.saved || bounced {
		o.save()
	}
	if !anyLeft(env) {
		return nil
	}
	next := o.next
	return &next
}

func anyLeft(env *spool.Envelope) bool {
	for _, rc := range env.Rcpts {
		if !rc.Done {
			return true
		}
	}
	return false
}

func markDone(env *spool.Envelope, idx []int) {
	for _, ri := range idx {
		env.Rcpts[ri].Done = true
	}
}

// backoff is the wait after the n-th failed attempt: MinBackoff doubled
// n-1 times, at most MaxBackoff.
func (q *Queue) backoff(n int) time.Duration {
	d := q.cfg.MinBackoff
	for i := 1; i < n && d < q.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, q.cfg.MaxBackoff)
}

// bounce queues a DSN to the sender of env for the recipients idx. It
// reports whether they may be marked done: true once the DSN is durable, or
// when there is no one to send it to.
func (q *Queue) bounce(env *spool.Envelope, idx []int, expired bool) bool {
	if env.From == "" {
		// RFC 5321 §4.5.5: a message with the null sender is never
		// answered with another, which would risk a loop.
		q.logger.Warn("bounce dropped: null sender", "id", env.ID, "rcpts", len(idx))
		return true
	}
	id, err := q.writeBounce(env, idx, expired)
	if err != nil {
		q.logger.Error("cannot queue bounce, will try again", "id", env.ID, "err", err)
		return false
	}
	q.logger.Info("bounce queued", "id", env.ID, "bounce", id, "to", env.From, "rcpts", len(idx))
	q.Enqueue(id)
	return true
}

func (q *Queue) writeBounce(env *spool.Envelope, idx []int, expired bool) (string, error) {
	b, err := q.sp.Body(env.ID)
	if err != nil {
		return "", err
	}
	headers, err := readHeaders(b)
	b.Close()
	if err != nil {
		return "", fmt.Errorf("reading the original headers: %w", err)
	}
	d := &dsn{
		reportingMTA: q.cfg.Hostname, env: env, failed: idx, expired: expired,
		lifetime: q.cfg.QueueLifetime, now: time.Now(), headers: headers,
	}
	var buf bytes.Buffer
	if err := d.write(&buf); err != nil {
		return "", err
	}
	w, err := q.sp.Create(&spool.Envelope{
		From:     "",
		Rcpts:    []spool.Rcpt{{Addr: env.From}},
		Helo:     q.cfg.Hostname,
		SMTPUTF8: !isASCII(env.From),
	})
	if err != nil {
		return "", err
	}
	defer w.Abort()
	if _, err := w.Write(buf.Bytes()); err != nil {
		return "", err
	}
	return w.Commit()
}

// schedEntry is one scheduled attempt; schedHeap orders them by time.
type schedEntry struct {
	at  time.Time
	id  string
	seq uint64
}

type schedHeap []schedEntry

func (h schedHeap) Len() int { return len(h) }
func (h schedHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq // FIFO among equals: oldest first at start
	}
	return h[i].at.Before(h[j].at)
}
func (h schedHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *schedHeap) Push(x any)   { *h = append(*h, x.(schedEntry)) }
func (h *schedHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

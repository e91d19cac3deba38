package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// SendConfig describes a [Send] run.
type SendConfig struct {
	Addr        string // server, host:port
	Concurrency int    // sessions at a time; 0 means 1
	Messages    int    // messages in total
	Size        int    // body octets after the header (0, or at least 2)
	Rcpts       int    // recipients per message; 0 means 1
	MsgsPerConn int    // messages per session; 0 means one long session per worker
	From        string // envelope sender; "" is the null sender
	// To is the first recipient. With Rcpts N > 1 the others are 2To, 3To
	// ... NTo, as Postfix's smtp-source names them, so user@localhost
	// becomes user@localhost, 2user@localhost, 3user@localhost.
	To         string
	EHLO       string        // name to greet with; "" means "mxload.localhost"
	Pipelining bool          // use PIPELINING when the server offers it
	Bind       *AddrPool     // source addresses, round robin; nil lets the kernel choose
	Timeout    time.Duration // for each connect and each reply; 0 means 30s

	// QuitNoWait sends QUIT and closes without waiting for the reply,
	// as Postfix's smtp client does by default; SessionLatency then ends
	// when QUIT is written.
	QuitNoWait bool

	// MaildirDir, when set, makes Send wait after sending until
	// MaildirExpect files exist in the "new" directories below it (at any
	// depth), or until MaildirTimeout (0 means one minute) has passed. When
	// fewer messages were accepted, it waits only until their copies are
	// there (the delivery is then incomplete).
	MaildirDir     string
	MaildirExpect  int
	MaildirTimeout time.Duration
}

// SendResult is what a [Send] run measured. Every message Send started
// is counted in exactly one of Accepted, TempFail, PermFail and Errors.
type SendResult struct {
	Messages   int // messages started: fewer than asked when ctx ended early
	Accepted   int // 250 to the final dot
	TempFail   int // refused with 4xx (at any step, including the greeting)
	PermFail   int // refused with 5xx
	Errors     int // lost to a network or protocol error
	Sessions   int // sessions that got through the greeting and EHLO
	Octets     int // DATA payload octets per message, header included
	Elapsed    time.Duration
	Refusals   map[string]int // refusals by step and code, such as "RCPT 450"
	ErrorKinds map[string]int // every network or protocol error by kind, such as "ECONNRESET"

	// MessageLatency runs from writing MAIL to the reply to the final dot,
	// over accepted messages; SessionLatency from starting to connect to
	// the reply to QUIT (with QuitNoWait, to writing QUIT), over sessions
	// that ended with QUIT.
	MessageLatency Percentiles
	SessionLatency Percentiles
	QuitNoWait     bool // sessions ended without waiting for the QUIT reply

	Delivery *Delivery // nil unless SendConfig.MaildirDir was set
}

// Delivery is how long accepted mail took to reach the Maildir.
type Delivery struct {
	Dir      string
	Expect   int           // files waited for
	Before   int           // files that were there before sending began
	Found    int           // files there at the end
	Rcpts    int           // recipients per message: files per message
	After    time.Duration // from the start of sending until Found reached Expect, or until giving up
	Complete bool          // Found reached Expect in time
}

// MessagesPerSecond is accepted messages over the elapsed time.
func (r *SendResult) MessagesPerSecond() float64 {
	return perSecond(float64(r.Accepted), r.Elapsed)
}

// MBPerSecond is accepted DATA payload in megabytes (10⁶ octets) per
// second.
func (r *SendResult) MBPerSecond() float64 {
	return perSecond(float64(r.Accepted)*float64(r.Octets)/1e6, r.Elapsed)
}

// MessagesPerSecond is the messages of this run (files that were not there
// before, one per recipient) over the time until they were all delivered.
func (d *Delivery) MessagesPerSecond() float64 {
	if !d.Complete {
		return 0
	}
	return perSecond(float64(d.Expect-d.Before)/float64(max(d.Rcpts, 1)), d.After)
}

// Send runs the configured load against cfg.Addr and reports what it
// measured. It stops starting messages when ctx ends; messages under way
// finish or time out. The error is for a bad configuration only: the
// server's refusals and failures are results.
func Send(ctx context.Context, cfg SendConfig) (*SendResult, error) {
	switch {
	case cfg.Addr == "":
		return nil, errors.New("no server address")
	case cfg.Messages < 1:
		return nil, fmt.Errorf("messages: %d, want at least 1", cfg.Messages)
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("concurrency: %d, want at least 1", cfg.Concurrency)
	case cfg.MsgsPerConn < 0:
		return nil, fmt.Errorf("messages per session: %d, want 0 or more", cfg.MsgsPerConn)
	case cfg.MaildirDir != "" && cfg.MaildirExpect < 1:
		return nil, fmt.Errorf("maildir wait: expect %d files, want at least 1", cfg.MaildirExpect)
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	cfg.Rcpts = max(cfg.Rcpts, 1)
	cfg.Timeout = cmp0(cfg.Timeout, 30*time.Second)
	cfg.MaildirTimeout = cmp0(cfg.MaildirTimeout, time.Minute)
	if cfg.EHLO == "" {
		cfg.EHLO = "mxload.localhost"
	}
	env, err := newEnvelope(cfg.From, cfg.To, cfg.Rcpts, cfg.Size, time.Now())
	if err != nil {
		return nil, err
	}

	res := &SendResult{
		QuitNoWait: cfg.QuitNoWait,
		Octets:     env.octets(),
		Refusals:   map[string]int{},
		ErrorKinds: map[string]int{},
	}
	var before int
	if cfg.MaildirDir != "" {
		if before, err = countMaildir(cfg.MaildirDir); err != nil {
			return nil, err
		}
	}

	var left atomic.Int64
	left.Store(int64(cfg.Messages))
	tallies := make([]sendTally, min(cfg.Concurrency, cfg.Messages))
	var wg sync.WaitGroup
	start := time.Now()
	for i := range tallies {
		wg.Go(func() { tallies[i] = sendWorker(ctx, &cfg, env, &left) })
	}
	wg.Wait()
	res.Elapsed = time.Since(start)

	var msgLat, sessLat []time.Duration
	for _, t := range tallies {
		res.Accepted += t.accepted
		res.TempFail += t.tempFail
		res.PermFail += t.permFail
		res.Errors += t.errors
		res.Sessions += t.sessions
		counts(res.Refusals).merge(t.refusals)
		counts(res.ErrorKinds).merge(t.errorKinds)
		msgLat = append(msgLat, t.msgLat...)
		sessLat = append(sessLat, t.sessLat...)
	}
	res.Messages = res.Accepted + res.TempFail + res.PermFail + res.Errors
	res.MessageLatency = summarize(msgLat)
	res.SessionLatency = summarize(sessLat)

	if cfg.MaildirDir != "" {
		wctx, cancel := context.WithTimeout(ctx, cfg.MaildirTimeout)
		defer cancel()
		// Only accepted messages can arrive: when fewer were accepted than
		// expected, wait for those alone, not until the deadline.
		target := min(cfg.MaildirExpect, before+res.Accepted*cfg.Rcpts)
		found, err := WaitMaildir(wctx, cfg.MaildirDir, target, 20*time.Millisecond)
		if err == nil && found < cfg.MaildirExpect {
			err = errShort
		}
		res.Delivery = &Delivery{
			Dir:      cfg.MaildirDir,
			Expect:   cfg.MaildirExpect,
			Before:   before,
			Found:    found,
			Rcpts:    cfg.Rcpts,
			After:    time.Since(start),
			Complete: err == nil,
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && err != errShort {
			return res, err
		}
	}
	return res, nil
}

// cmp0 returns d, or def when d is zero.
func cmp0(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// sendTally is one worker's share of a SendResult.
type sendTally struct {
	accepted, tempFail, permFail, errors, sessions int

	refusals, errorKinds counts
	msgLat, sessLat      []time.Duration
}

// count files the verdict for one message.
func (t *sendTally) count(v verdict) {
	switch {
	case v.err != nil:
		t.errors++
		t.errorKinds[errKind(v.err)]++
	case v.code/100 == 2:
		t.accepted++
	case v.code/100 == 4:
		t.tempFail++
		t.refusals[fmt.Sprintf("%s %d", v.step, v.code)]++
	default: // 5xx; expect turned other classes into errors
		t.permFail++
		t.refusals[fmt.Sprintf("%s %d", v.step, v.code)]++
	}
}

// sendWorker sends messages until none are left, one session after
// another.
func sendWorker(ctx context.Context, cfg *SendConfig, env *envelope, left *atomic.Int64) sendTally {
	t := sendTally{refusals: counts{}, errorKinds: counts{}}
	var (
		c         *client
		began     time.Time // the current session's
		inSession int
	)
	endSession := func() {
		if err := c.quit(!cfg.QuitNoWait); err != nil {
			t.errorKinds[errKind(err)]++
		} else {
			t.sessLat = append(t.sessLat, time.Since(began))
		}
		c, inSession = nil, 0
	}
	// Messages are claimed a session's worth at a time, before the session
	// is opened, so that a refused connection is charged to exactly one
	// message, the totals add up, and n messages at m per session take
	// exactly ceil(n/m) sessions when all goes well.
	batch := int64(cfg.MsgsPerConn)
	if batch == 0 {
		batch = 1 // one long session, which takes a message at a time
	}
	var claimed int64
	for ctx.Err() == nil {
		if claimed == 0 {
			if claimed = claim(left, batch); claimed == 0 {
				break
			}
		}
		if c == nil {
			began = time.Now()
			var v verdict
			if c, v = dialSMTP(ctx, cfg.Bind, cfg.Addr, cfg.EHLO, cfg.Pipelining, cfg.Timeout); c == nil {
				t.count(v)
				claimed--
				continue
			}
			t.sessions++
		}
		mailAt := time.Now()
		v := c.transact(env)
		claimed--
		t.count(v)
		if v.ok() {
			t.msgLat = append(t.msgLat, time.Since(mailAt))
		}
		inSession++
		switch {
		case v.dead() || c.broken != nil:
			if c.broken != nil {
				t.errorKinds[errKind(c.broken)]++
			}
			c.close()
			c, inSession = nil, 0
		case cfg.MsgsPerConn > 0 && inSession == cfg.MsgsPerConn:
			endSession()
		}
	}
	if c != nil {
		endSession()
	}
	return t
}

// errShort marks a Maildir wait that ended with every accepted message
// there, but fewer than expected were accepted.
var errShort = errors.New("fewer messages accepted than expected")

// claim takes up to k of the messages left and returns how many it got.
// The counter may go below zero; what was taken beyond zero is not given.
func claim(left *atomic.Int64, k int64) int64 {
	after := left.Add(-k)
	if after >= 0 {
		return k
	}
	return max(0, k+after)
}

// WriteText prints r for people.
func (r *SendResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("messages   %d: accepted %d, temp failures %d, perm failures %d, errors %d\n",
		r.Messages, r.Accepted, r.TempFail, r.PermFail, r.Errors)
	ew.printf("sessions   %d\n", r.Sessions)
	ew.printf("elapsed    %.3fs\n", r.Elapsed.Seconds())
	ew.printf("throughput %.1f messages/s, %.3f MB/s (%d octets per message)\n",
		r.MessagesPerSecond(), r.MBPerSecond(), r.Octets)
	ew.printf("per message (MAIL to 250 after the dot): %v\n", r.MessageLatency)
	if r.QuitNoWait {
		ew.printf("per session (connect to QUIT sent):      %v\n", r.SessionLatency)
	} else {
		ew.printf("per session (connect to QUIT reply):     %v\n", r.SessionLatency)
	}
	for _, k := range counts(r.Refusals).keys() {
		ew.printf("refused    %s: %d\n", k, r.Refusals[k])
	}
	for _, k := range counts(r.ErrorKinds).keys() {
		ew.printf("error      %s: %d\n", k, r.ErrorKinds[k])
	}
	if d := r.Delivery; d != nil {
		if d.Complete {
			ew.printf("delivered  %d files in %s/**/new after %.3fs: %.1f messages/s\n",
				d.Found, d.Dir, d.After.Seconds(), d.MessagesPerSecond())
		} else {
			ew.printf("delivered  only %d of %d files in %s/**/new after %.3fs\n",
				d.Found, d.Expect, d.Dir, d.After.Seconds())
		}
		if d.Before > 0 {
			ew.printf("warning    %d files were already there before sending\n", d.Before)
		}
	}
	return ew.err
}

// MarshalJSON adds the rates and gives durations in seconds.
func (r *SendResult) MarshalJSON() ([]byte, error) {
	type delivery struct {
		Dir               string  `json:"dir"`
		Expect            int     `json:"expect"`
		Before            int     `json:"before"`
		Found             int     `json:"found"`
		Seconds           float64 `json:"seconds"`
		Complete          bool    `json:"complete"`
		MessagesPerSecond float64 `json:"messages_per_second"`
	}
	out := struct {
		Mode              string         `json:"mode"`
		Messages          int            `json:"messages"`
		Accepted          int            `json:"accepted"`
		TempFail          int            `json:"temp_fail"`
		PermFail          int            `json:"perm_fail"`
		Errors            int            `json:"errors"`
		Sessions          int            `json:"sessions"`
		Octets            int            `json:"octets_per_message"`
		Seconds           float64        `json:"seconds"`
		MessagesPerSecond float64        `json:"messages_per_second"`
		MBPerSecond       float64        `json:"mb_per_second"`
		MessageLatency    Percentiles    `json:"message_latency"`
		SessionLatency    Percentiles    `json:"session_latency"`
		QuitNoWait        bool           `json:"quit_nowait"`
		Refusals          map[string]int `json:"refusals"`
		ErrorKinds        map[string]int `json:"error_kinds"`
		Delivery          *delivery      `json:"delivery,omitempty"`
	}{
		"send", r.Messages, r.Accepted, r.TempFail, r.PermFail, r.Errors, r.Sessions, r.Octets,
		r.Elapsed.Seconds(), r.MessagesPerSecond(), r.MBPerSecond(),
		r.MessageLatency, r.SessionLatency, r.QuitNoWait, r.Refusals, r.ErrorKinds, nil,
	}
	if d := r.Delivery; d != nil {
		out.Delivery = &delivery{d.Dir, d.Expect, d.Before, d.Found, d.After.Seconds(), d.Complete, d.MessagesPerSecond()}
	}
	return json.Marshal(out)
}

// errWriter keeps the first write error, so that report code can print
// line after line and check once.
type errWriter struct {
	w   io.Writer
	err error
}

func (ew *errWriter) printf(format string, args ...any) {
	if ew.err == nil {
		_, ew.err = fmt.Fprintf(ew.w, format, args...)
	}
}

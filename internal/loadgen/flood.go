package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// FloodConfig describes a [Flood] run.
type FloodConfig struct {
	Addr     string        // server, host:port
	Duration time.Duration // how long to keep starting connections
	Bind     *AddrPool     // source addresses, round robin; nil lets the kernel choose
	Timeout  time.Duration // for the connect and for the first reply; 0 means 10s

	// Closed loop (Rate 0): Concurrency dialers, each starting its next
	// connection as soon as the last one is answered, so the offered load
	// follows the server's speed; 0 means 1.
	Concurrency int

	// Open loop: Rate connections started per second, on a fixed schedule,
	// whatever the server does with them. At most MaxOutstanding are open
	// at once (0 means 1000): a start that falls due while that many are
	// open is dropped and counted, not made up later, so that a server that
	// falls behind never gets a burst.
	Rate           float64
	MaxOutstanding int

	// Engine makes the open loop's connections: "net" (the default), Go's
	// dialer, a goroutine per outstanding connection; or "epoll" (Linux),
	// raw system calls on one goroutine, for floods of tens of thousands
	// a second from one core (measured on this project's 2-core machines:
	// 37 µs of the load core per connection with net at 10,000/s, 30 µs
	// with epoll; at 30,000/s epoll kept its schedule and net reached
	// 25,000/s).
	Engine string
}

// FloodResult is what a [Flood] run measured. Every connection attempt
// is counted in exactly one of Replies and Errors.
type FloodResult struct {
	Rate     float64        // open loop: the connections per second asked for; 0 for a closed loop
	Attempts int            // connections started
	Dropped  int            // open loop: starts due while MaxOutstanding connections were open, not made
	Replies  map[string]int // first reply by code: "220", "421", "554" ...
	Errors   map[string]int // failures by kind: "EADDRNOTAVAIL", "ECONNRESET", "EOF", "timeout" ...

	// Window runs from the first start until starting stopped (the
	// duration ran out or ctx ended); Elapsed until the last connection
	// closed, up to Timeout later.
	Window, Elapsed time.Duration

	// RefusedInWindow counts the first replies other than 2xx that
	// arrived within Window: refusals over Window is the rate at which the
	// server refused while under this load, without the tail that drains
	// after it.
	RefusedInWindow int

	// FirstReply runs from starting to connect until the first reply
	// arrived, over connections that got one: the time a client waits to
	// learn its fate.
	FirstReply Percentiles

	// StartLag (open loop) is how late each start was against the
	// schedule. A p99 of more than a few milliseconds means the client,
	// not the server, set the pace.
	StartLag Percentiles
}

// ConnectionsPerSecond is attempts over the window: the achieved rate.
func (r *FloodResult) ConnectionsPerSecond() float64 {
	return perSecond(float64(r.Attempts), r.Window)
}

// RefusalsPerSecond is the refusals that arrived within the window, over
// the window.
func (r *FloodResult) RefusalsPerSecond() float64 {
	return perSecond(float64(r.RefusedInWindow), r.Window)
}

// Flood connects to cfg.Addr for cfg.Duration (or until ctx ends), reads
// the first reply of each connection, answers a 2xx greeting with QUIT,
// and closes. With cfg.Rate it starts connections at that rate, open
// loop; without, cfg.Concurrency dialers reconnect as fast as they are
// answered.
//
// Connections are closed with SO_LINGER 0 (a reset instead of FIN), so
// that neither end keeps them in TIME_WAIT: otherwise a flood from one
// source address exhausts its ephemeral ports within seconds. Spreading
// cfg.Bind over many loopback addresses raises the ceiling further. The
// reset follows QUIT without waiting for its reply, so the server may log
// each greeted connection as lost (smtp-sink does).
func Flood(ctx context.Context, cfg FloodConfig) (*FloodResult, error) {
	switch {
	case cfg.Addr == "":
		return nil, errors.New("no server address")
	case cfg.Duration <= 0:
		return nil, fmt.Errorf("duration %v, want more than 0", cfg.Duration)
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("concurrency: %d, want at least 1", cfg.Concurrency)
	case cfg.MaxOutstanding < 0:
		return nil, fmt.Errorf("outstanding connections: %d, want at least 1", cfg.MaxOutstanding)
	case cfg.Rate < 0:
		return nil, fmt.Errorf("rate %v, want more than 0 (or 0 for a closed loop)", cfg.Rate)
	case cfg.Engine != "" && cfg.Engine != "net" && cfg.Engine != "epoll":
		return nil, fmt.Errorf("engine %q: want net or epoll", cfg.Engine)
	case cfg.Engine == "epoll" && cfg.Rate == 0:
		return nil, errors.New("the epoll engine is for the open loop: give a rate")
	case cfg.Engine == "epoll" && !epollAvailable:
		return nil, errors.New("the epoll engine needs Linux")
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	cfg.MaxOutstanding = cmp0int(cfg.MaxOutstanding, 1000)
	cfg.Timeout = cmp0(cfg.Timeout, 10*time.Second)
	var sched schedule
	if cfg.Rate > 0 {
		var err error
		if sched, err = newSchedule(cfg.Rate, cfg.Duration); err != nil {
			return nil, err
		}
	}

	// The window ends with ctx; the connections under way then are
	// finished, not cancelled, so that the counts match what the server
	// saw. The deadline is set from start, so that when it passes every
	// start of the schedule is due.
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
	defer cancel()
	if cfg.Engine == "epoll" {
		return floodEpoll(ctx, &cfg, sched, start)
	}
	var (
		wg      sync.WaitGroup
		tallies []floodTally
		dropped int64
		window  time.Duration
	)
	if cfg.Rate > 0 {
		// Queued starts count as outstanding, so the queue never holds
		// more than MaxOutstanding and a send never blocks the schedule.
		starts := make(chan time.Time, cfg.MaxOutstanding)
		var outstanding atomic.Int64
		tallies = make([]floodTally, cfg.MaxOutstanding)
		for i := range tallies {
			wg.Go(func() { tallies[i] = openWorker(ctx, &cfg, starts, &outstanding) })
		}
		dropped = dispatch(ctx, sched, start, starts, &outstanding, int64(cfg.MaxOutstanding))
		<-ctx.Done() // the last start is due up to 1/rate before the end
		window = time.Since(start)
		close(starts)
	} else {
		tallies = make([]floodTally, cfg.Concurrency)
		for i := range tallies {
			wg.Go(func() { tallies[i] = closedWorker(ctx, &cfg) })
		}
		<-ctx.Done()
		window = time.Since(start)
	}
	wg.Wait()
	res := &FloodResult{
		Rate: cfg.Rate, Dropped: int(dropped), Window: window, Elapsed: time.Since(start),
		Replies: map[string]int{}, Errors: map[string]int{},
	}
	var lat, lag []time.Duration
	for _, t := range tallies {
		res.Attempts += t.attempts
		res.RefusedInWindow += t.refusedInWindow
		counts(res.Replies).merge(t.replies)
		counts(res.Errors).merge(t.errors)
		lat = append(lat, t.lat...)
		lag = append(lag, t.lag...)
	}
	res.FirstReply = summarize(lat)
	res.StartLag = summarize(lag)
	return res, nil
}

// dispatch queues each start of sched on starts when it falls due, unless
// limit connections are already outstanding (queued or under way): then it
// drops the start and counts it. It returns the count when every start is
// queued or dropped, or when ctx ends, after one last pass over the starts
// due by then: at ctx's deadline that is all of them.
//
// It sleeps until the next start is due and then queues every start due
// by then, so a timer coarser than the interval between starts (at
// 20,000/s, 50 µs) makes small bursts but never a lower rate.
func dispatch(ctx context.Context, sched schedule, start time.Time, starts chan<- time.Time,
	outstanding *atomic.Int64, limit int64) (dropped int64) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for next := int64(0); ; {
		now := time.Since(start)
		for due := sched.due(now); next < due; next++ {
			if outstanding.Load() >= limit {
				dropped++
				continue
			}
			outstanding.Add(1)
			starts <- start.Add(sched.at(next))
		}
		if next == sched.total || ctx.Err() != nil {
			return dropped
		}
		timer.Reset(sched.at(next) - now)
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	}
}

type floodTally struct {
	attempts, refusedInWindow int
	replies, errors           counts
	lat, lag                  []time.Duration
	br                        *bufio.Reader
}

func newFloodTally() floodTally {
	return floodTally{replies: counts{}, errors: counts{}, br: bufio.NewReaderSize(nil, 512)}
}

// closedWorker connects again and again until ctx ends.
func closedWorker(ctx context.Context, cfg *FloodConfig) floodTally {
	t := newFloodTally()
	for ctx.Err() == nil {
		t.once(ctx, cfg)
	}
	t.br = nil
	return t
}

// openWorker makes one connection for each start it is handed, until
// starts is closed.
func openWorker(ctx context.Context, cfg *FloodConfig, starts <-chan time.Time, outstanding *atomic.Int64) floodTally {
	t := newFloodTally()
	for due := range starts {
		t.lag = append(t.lag, time.Since(due))
		t.once(ctx, cfg)
		outstanding.Add(-1)
	}
	t.br = nil
	return t
}

const quitLine = "QUIT\r\n"

// once makes one connection and counts its outcome. ctx only says whether
// the window is still open: the connection itself is never cancelled.
func (t *floodTally) once(ctx context.Context, cfg *FloodConfig) {
	t.attempts++
	began := time.Now()
	conn, err := dial(context.WithoutCancel(ctx), cfg.Bind, cfg.Addr, cfg.Timeout)
	if err != nil {
		t.errors[errKind(err)]++
		return
	}
	conn.SetDeadline(began.Add(cfg.Timeout))
	t.br.Reset(conn)
	code, _, err := textproto.NewReader(t.br).ReadResponse(0)
	if err != nil {
		t.errors[errKind(err)]++
		abort(conn)
		return
	}
	t.lat = append(t.lat, time.Since(began))
	t.replies[strconv.Itoa(code)]++
	if code/100 == 2 {
		// A greeting deserves a goodbye; the reply does not matter.
		conn.Write([]byte(quitLine))
	} else if ctx.Err() == nil {
		t.refusedInWindow++
	}
	abort(conn)
}

// WriteText prints r for people.
func (r *FloodResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	if r.Rate > 0 {
		ew.printf("rate        %.1f/s asked, open loop; %d starts dropped (too many outstanding)\n", r.Rate, r.Dropped)
	}
	ew.printf("connections %d in %.3fs: %.1f/s\n", r.Attempts, r.Window.Seconds(), r.ConnectionsPerSecond())
	ew.printf("refusals    %d in the window: %.1f/s\n", r.RefusedInWindow, r.RefusalsPerSecond())
	for _, k := range counts(r.Replies).keys() {
		ew.printf("reply       %s: %d\n", k, r.Replies[k])
	}
	for _, k := range counts(r.Errors).keys() {
		ew.printf("error       %s: %d\n", k, r.Errors[k])
	}
	ew.printf("first reply (connect to reply): %v\n", r.FirstReply)
	if r.Rate > 0 {
		ew.printf("start lag (behind schedule): %v\n", r.StartLag)
	}
	return ew.err
}

// MarshalJSON adds the rates and gives durations in seconds.
func (r *FloodResult) MarshalJSON() ([]byte, error) {
	errs := 0
	for _, n := range r.Errors {
		errs += n
	}
	return json.Marshal(struct {
		Mode                 string         `json:"mode"`
		Rate                 float64        `json:"rate"`
		Attempts             int            `json:"connections"`
		Dropped              int            `json:"dropped"`
		Window               float64        `json:"window_seconds"`
		Seconds              float64        `json:"seconds"`
		ConnectionsPerSecond float64        `json:"connections_per_second"`
		RefusedInWindow      int            `json:"refused_in_window"`
		RefusalsPerSecond    float64        `json:"refusals_per_second"`
		ErrorsPerSecond      float64        `json:"errors_per_second"`
		Replies              map[string]int `json:"replies"`
		Errors               map[string]int `json:"errors"`
		FirstReply           Percentiles    `json:"first_reply"`
		StartLag             Percentiles    `json:"start_lag"`
	}{
		"flood", r.Rate, r.Attempts, r.Dropped, r.Window.Seconds(), r.Elapsed.Seconds(), r.ConnectionsPerSecond(),
		r.RefusedInWindow, r.RefusalsPerSecond(), perSecond(float64(errs), r.Elapsed), r.Replies, r.Errors,
		r.FirstReply, r.StartLag,
	})
}

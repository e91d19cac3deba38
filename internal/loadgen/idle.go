package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// IdleConfig describes an [Idle] run.
type IdleConfig struct {
	Addr        string    // server, host:port
	Conns       int       // connections to open and hold
	Concurrency int       // dialers at a time while opening; 0 means 100
	Bind        *AddrPool // source addresses, round robin; nil lets the kernel choose
	// EHLOFirst makes each connection wait for the greeting and send EHLO
	// before it falls silent, so that the server holds a session past
	// the greeting, not just an accepted socket.
	EHLOFirst bool
	EHLO      string        // name to greet with; "" means "mxload.localhost"
	Hold      time.Duration // how long to hold them all open once opened
	Interval  time.Duration // between samples during the hold; 0 means 1s
	Timeout   time.Duration // for each connect (and greeting and EHLO); 0 means 30s
	Procs     *ProcSet      // server processes to measure; nil for no memory figures

	// Progress, if set, is called with each sample as it is taken.
	Progress func(IdleSample)
}

// IdleSample is the state of the held connections at one moment.
type IdleSample struct {
	At      time.Duration // since the hold began
	Open    int           // connections the server has not closed
	Greeted int           // connections that got a 2xx greeting so far
	Mem     *Mem          // nil without IdleConfig.Procs
}

// IdleResult is what an [Idle] run measured.
type IdleResult struct {
	Opened   int            // connections established
	Refused  map[string]int // first replies other than 2xx (greeting or EHLO), by code
	Errors   map[string]int // failed connects, and EHLO exchanges, by kind
	Closed   map[string]int // connections the server closed during the run, by kind ("EOF", "ECONNRESET")
	OpenTime time.Duration  // time taken to open them all
	Baseline *Mem           // before the first connect; nil without IdleConfig.Procs
	Samples  []IdleSample   // during the hold, the last at its end
}

// Last returns the last sample, taken at the end of the hold.
func (r *IdleResult) Last() IdleSample {
	if len(r.Samples) == 0 {
		return IdleSample{}
	}
	return r.Samples[len(r.Samples)-1]
}

// BytesPerConn divides the memory the server gained since the baseline by
// the connections still open at the end of the hold, in RSS and in PSS.
// ok is false without memory figures or open connections.
func (r *IdleResult) BytesPerConn() (rss, pss float64, ok bool) {
	last := r.Last()
	if r.Baseline == nil || last.Mem == nil || last.Open == 0 {
		return 0, 0, false
	}
	n := float64(last.Open)
	return float64(last.Mem.RSS-r.Baseline.RSS) / n, float64(last.Mem.PSS-r.Baseline.PSS) / n, true
}

// idleRun is the shared state of one Idle run.
type idleRun struct {
	cfg     *IdleConfig
	open    atomic.Int64
	greeted atomic.Int64
	holding sync.WaitGroup // one per connection's reader

	mu      sync.Mutex
	conns   []*net.TCPConn
	refused counts
	errors  counts
	closed  counts
}

// Idle opens cfg.Conns connections to cfg.Addr, holds them open and silent
// for cfg.Hold while sampling how many are still open and, with cfg.Procs,
// the server's memory, then closes them all. It stops early when ctx ends.
//
// Each process can only hold as many connections as its RLIMIT_NOFILE
// allows; see [RaiseNoFileLimit].
func Idle(ctx context.Context, cfg IdleConfig) (*IdleResult, error) {
	switch {
	case cfg.Addr == "":
		return nil, errors.New("no server address")
	case cfg.Conns < 1:
		return nil, fmt.Errorf("connections: %d, want at least 1", cfg.Conns)
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("concurrency: %d, want at least 1", cfg.Concurrency)
	case cfg.Hold < 0:
		return nil, fmt.Errorf("hold %v, want 0 or more", cfg.Hold)
	}
	cfg.Concurrency = cmp0int(cfg.Concurrency, 100)
	cfg.Interval = cmp0(cfg.Interval, time.Second)
	cfg.Timeout = cmp0(cfg.Timeout, 30*time.Second)
	if cfg.EHLO == "" {
		cfg.EHLO = "mxload.localhost"
	}
	run := &idleRun{cfg: &cfg, refused: counts{}, errors: counts{}, closed: counts{}}
	res := &IdleResult{}
	if cfg.Procs != nil {
		m, err := cfg.Procs.Sample()
		if err != nil {
			return nil, err
		}
		res.Baseline = &m
	}

	start := time.Now()
	run.openAll(ctx)
	res.OpenTime = time.Since(start)
	res.Opened = len(run.conns)

	err := run.hold(ctx, res)

	// Our own closing is not the server's doing: count closes up to here.
	run.mu.Lock()
	res.Refused, res.Errors, res.Closed = run.refused, run.errors, run.closed
	run.refused, run.errors, run.closed = counts{}, counts{}, counts{}
	for _, c := range run.conns {
		abort(c)
	}
	run.mu.Unlock()
	run.holding.Wait()
	return res, err
}

func cmp0int(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// openAll dials cfg.Conns connections with cfg.Concurrency dialers.
func (run *idleRun) openAll(ctx context.Context) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(run.cfg.Concurrency, run.cfg.Conns) {
		wg.Go(func() {
			for ctx.Err() == nil && next.Add(1) <= int64(run.cfg.Conns) {
				run.openOne(ctx)
			}
		})
	}
	wg.Wait()
}

// openOne opens one connection and leaves a goroutine reading from it, to
// notice when the server closes it.
func (run *idleRun) openOne(ctx context.Context) {
	cfg := run.cfg
	conn, err := dial(ctx, cfg.Bind, cfg.Addr, cfg.Timeout)
	if err != nil {
		run.count(run.errors, errKind(err))
		return
	}
	r := textproto.NewReader(bufio.NewReaderSize(conn, 256))
	greeted := false
	if cfg.EHLOFirst {
		conn.SetDeadline(time.Now().Add(cfg.Timeout))
		code, _, err := r.ReadResponse(0)
		if err == nil && code/100 == 2 {
			run.greeted.Add(1)
			greeted = true
			_, err = fmt.Fprintf(conn, "EHLO %s\r\n", cfg.EHLO)
			if err == nil {
				code, _, err = r.ReadResponse(0)
			}
		}
		switch {
		case err != nil:
			run.count(run.errors, errKind(err))
		case code/100 != 2:
			run.count(run.refused, strconv.Itoa(code))
		}
		if err != nil || code/100 != 2 {
			if greeted {
				run.greeted.Add(-1)
			}
			abort(conn)
			return
		}
		conn.SetDeadline(time.Time{})
	}
	run.mu.Lock()
	run.conns = append(run.conns, conn)
	run.mu.Unlock()
	run.open.Add(1)
	run.holding.Add(1)
	go run.watch(conn, r, !greeted)
}

// watch reads whatever the server sends until it closes the connection
// (or we do): the greeting, a timeout notice, or nothing at all.
func (run *idleRun) watch(conn net.Conn, r *textproto.Reader, wantGreeting bool) {
	defer run.holding.Done()
	defer run.open.Add(-1)
	var err error
	if wantGreeting {
		var code int
		if code, _, err = r.ReadResponse(0); err == nil {
			if code/100 == 2 {
				run.greeted.Add(1)
			} else {
				run.count(run.refused, strconv.Itoa(code))
			}
		}
	}
	// Not io.Copy: it would hold a 32 KiB buffer per idle connection
	// while blocked; the reader's own small buffer does.
	for err == nil {
		if _, err = r.R.ReadByte(); err == nil {
			r.R.Discard(r.R.Buffered())
		}
	}
	run.count(run.closed, errKind(err))
}

// count adds one to a tally under the lock.
func (run *idleRun) count(c counts, key string) {
	run.mu.Lock()
	c[key]++
	run.mu.Unlock()
}

// hold samples every cfg.Interval until cfg.Hold has passed, and once more
// at the end.
func (run *idleRun) hold(ctx context.Context, res *IdleResult) error {
	start := time.Now()
	end := time.NewTimer(run.cfg.Hold)
	defer end.Stop()
	tick := time.NewTicker(run.cfg.Interval)
	defer tick.Stop()
	for {
		done := false
		select {
		case <-ctx.Done():
			done = true
		case <-end.C:
			done = true
		case <-tick.C:
		}
		s := IdleSample{At: time.Since(start), Open: int(run.open.Load()), Greeted: int(run.greeted.Load())}
		if run.cfg.Procs != nil {
			m, err := run.cfg.Procs.Sample()
			if err != nil {
				return err
			}
			s.Mem = &m
		}
		res.Samples = append(res.Samples, s)
		if run.cfg.Progress != nil {
			run.cfg.Progress(s)
		}
		if done {
			return nil
		}
	}
}

// String formats s on one line.
func (s IdleSample) String() string {
	line := fmt.Sprintf("t=%6.2fs open %d greeted %d", s.At.Seconds(), s.Open, s.Greeted)
	if s.Mem != nil {
		line += fmt.Sprintf("  server %d processes, RSS %s, PSS %s", s.Mem.Procs, mib(s.Mem.RSS), mib(s.Mem.PSS))
	}
	return line
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteText prints r for people.
func (r *IdleResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	last := r.Last()
	ew.printf("opened     %d connections in %.3fs\n", r.Opened, r.OpenTime.Seconds())
	ew.printf("held       %d still open, %d greeted, after %.3fs\n", last.Open, last.Greeted, last.At.Seconds())
	for _, k := range counts(r.Refused).keys() {
		ew.printf("refused    %s: %d\n", k, r.Refused[k])
	}
	for _, k := range counts(r.Errors).keys() {
		ew.printf("error      %s: %d\n", k, r.Errors[k])
	}
	for _, k := range counts(r.Closed).keys() {
		ew.printf("closed     by server, %s: %d\n", k, r.Closed[k])
	}
	if r.Baseline != nil && last.Mem != nil {
		ew.printf("memory     before: %d processes, RSS %s, PSS %s\n", r.Baseline.Procs, mib(r.Baseline.RSS), mib(r.Baseline.PSS))
		ew.printf("memory     held:   %d processes, RSS %s, PSS %s\n", last.Mem.Procs, mib(last.Mem.RSS), mib(last.Mem.PSS))
	}
	if rss, pss, ok := r.BytesPerConn(); ok {
		ew.printf("per idle connection: RSS %.0f bytes, PSS %.0f bytes\n", rss, pss)
	}
	return ew.err
}

// MarshalJSON gives durations in seconds and adds the per-connection cost.
func (r *IdleResult) MarshalJSON() ([]byte, error) {
	type sample struct {
		Seconds float64 `json:"seconds"`
		Open    int     `json:"open"`
		Greeted int     `json:"greeted"`
		Mem     *Mem    `json:"memory,omitempty"`
	}
	samples := make([]sample, len(r.Samples))
	for i, s := range r.Samples {
		samples[i] = sample{s.At.Seconds(), s.Open, s.Greeted, s.Mem}
	}
	out := struct {
		Mode        string         `json:"mode"`
		Opened      int            `json:"opened"`
		OpenSeconds float64        `json:"open_seconds"`
		Open        int            `json:"open_at_end"`
		Refused     map[string]int `json:"refused"`
		Errors      map[string]int `json:"errors"`
		Closed      map[string]int `json:"closed_by_server"`
		Baseline    *Mem           `json:"memory_before,omitempty"`
		RSSPerConn  *float64       `json:"rss_bytes_per_conn,omitempty"`
		PSSPerConn  *float64       `json:"pss_bytes_per_conn,omitempty"`
		Samples     []sample       `json:"samples"`
	}{
		Mode: "idle", Opened: r.Opened, OpenSeconds: r.OpenTime.Seconds(), Open: r.Last().Open,
		Refused: r.Refused, Errors: r.Errors, Closed: r.Closed, Baseline: r.Baseline, Samples: samples,
	}
	if rss, pss, ok := r.BytesPerConn(); ok {
		out.RSSPerConn, out.PSSPerConn = &rss, &pss
	}
	return json.Marshal(out)
}

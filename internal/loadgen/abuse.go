package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// An AbuseKind is one way of never ending what a client sends.
type AbuseKind string

// The kinds of abuse [Abuse] knows.
const (
	AbuseHeader  AbuseKind = "header"  // DATA, then one header line that never ends
	AbuseData    AbuseKind = "data"    // DATA, then CRLF-ended lines that never end
	AbuseCommand AbuseKind = "command" // a command line that never ends
)

// AbuseKinds lists every kind, in the order a mixed run deals them out.
var AbuseKinds = []AbuseKind{AbuseHeader, AbuseData, AbuseCommand}

// AbuseConfig describes an [Abuse] run.
type AbuseConfig struct {
	Addr        string      // server, host:port
	Abusers     int         // clients in all
	Concurrency int         // clients at a time; 0 means all at once
	Kinds       []AbuseKind // dealt out round robin; empty means all of AbuseKinds
	Bind        *AddrPool   // source addresses, round robin; nil lets the kernel choose
	EHLO        string      // name to greet with; "" means "mxload.localhost"
	From, To    string      // envelope of the DATA kinds; "" means mxload@localhost, user@localhost

	// MaxSize and LineMax are where the server is expected to cut the
	// DATA kinds (its max_message_size) and the command kind (its longest
	// command line): the limits past which the time to the cut is taken.
	// 0 means 1 MiB and 4096.
	MaxSize, LineMax int64

	// Cap is how much each client sends at most, so that a server that
	// never cuts it ends the run anyway; 0 means 64 MiB.
	Cap     int64
	Timeout time.Duration // for each connect, each reply and each write; 0 means 30s
	Procs   *ProcSet      // server processes whose CPU time to measure; nil for none
}

// AbuseResult is what an [Abuse] run measured.
type AbuseResult struct {
	Kinds   map[AbuseKind]*AbuseTally
	Elapsed time.Duration // from the first connect until the last client ended
	Octets  int64         // sent by all clients together
	// ServerCPU is the CPU time (user and system) the server processes
	// used during the run; nil without AbuseConfig.Procs.
	ServerCPU *time.Duration
}

// AbuseTally is what the clients of one kind saw. Every client is counted
// in exactly one of Cut, Early, Uncut and Errors.
type AbuseTally struct {
	Clients int
	Limit   int64 // the limit these clients were expected to be cut at
	Cut     int   // closed by the server after passing the limit
	Early   int   // closed by the server before passing it (refused at once, or another limit)
	Uncut   int   // still not cut when they had sent Cap octets, or their writes stalled
	Errors  int   // could not get as far as the abuse (connect, greeting, EHLO, MAIL, RCPT, DATA)
	// Replies counts the server's first reply after the abuse began, by
	// code; "none" when it closed without one.
	Replies    map[string]int
	ErrorKinds map[string]int // Errors and Uncut by kind: "ECONNREFUSED", "421 at DATA", "cap", "timeout"

	// Sent is the octets of abuse each client got into the kernel before
	// it learnt of the cut, over the clients cut: what the server read,
	// plus what the socket buffers between the two held. PastLimit is the
	// same less Limit, and ToCut the time from the write that took the
	// client past Limit until it saw the connection close.
	Sent      OctetPercentiles
	PastLimit OctetPercentiles
	ToCut     Percentiles
}

// OctetPercentiles summarises a set of octet counts, exactly (nearest
// rank).
type OctetPercentiles struct {
	Count int   `json:"count"`
	P50   int64 `json:"p50"`
	P90   int64 `json:"p90"`
	P99   int64 `json:"p99"`
	Max   int64 `json:"max"`
}

func summarizeOctets(samples []int64) OctetPercentiles {
	if len(samples) == 0 {
		return OctetPercentiles{}
	}
	slices.Sort(samples)
	return OctetPercentiles{
		Count: len(samples),
		P50:   rank(samples, 50),
		P90:   rank(samples, 90),
		P99:   rank(samples, 99),
		Max:   samples[len(samples)-1],
	}
}

// String formats p on one line, in KiB.
func (p OctetPercentiles) String() string {
	if p.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (%d samples)",
		kib(p.P50), kib(p.P90), kib(p.P99), kib(p.Max), p.Count)
}

func kib(n int64) string { return fmt.Sprintf("%.1f KiB", float64(n)/1024) }

// abuseOutcome is one client's end.
type abuseOutcome struct {
	kind   AbuseKind
	sent   int64
	passed time.Time // when sent went past the limit; zero if it never did
	closed time.Time // when the client learnt the server closed; zero if it did not
	reply  string    // code of the first reply after the abuse began; "" for none
	err    string    // why the client never got to the abuse, or why it was not cut
}

// Abuse runs cfg.Abusers clients against cfg.Addr, at most
// cfg.Concurrency at a time, each of which sets up a session and then
// sends one of cfg.Kinds of endless input in 16 KiB writes until the
// server closes the connection (or it has sent cfg.Cap). It measures how
// much each one got to send, how long after passing the server's limit it
// was cut off, and, with cfg.Procs, the CPU time the server spent.
//
// The clients close with SO_LINGER 0, like [Flood]'s.
func Abuse(ctx context.Context, cfg AbuseConfig) (*AbuseResult, error) {
	switch {
	case cfg.Addr == "":
		return nil, errors.New("no server address")
	case cfg.Abusers < 1:
		return nil, fmt.Errorf("abusers: %d, want at least 1", cfg.Abusers)
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("concurrency: %d, want at least 1", cfg.Concurrency)
	case cfg.MaxSize < 0 || cfg.LineMax < 0 || cfg.Cap < 0:
		return nil, errors.New("limits must not be negative")
	}
	cfg.Concurrency = cmp0int(cfg.Concurrency, cfg.Abusers)
	cfg.Timeout = cmp0(cfg.Timeout, 30*time.Second)
	cfg.MaxSize = cmp0int64(cfg.MaxSize, 1<<20)
	cfg.LineMax = cmp0int64(cfg.LineMax, 4096)
	cfg.Cap = cmp0int64(cfg.Cap, 64<<20)
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = AbuseKinds
	}
	if cfg.EHLO == "" {
		cfg.EHLO = "mxload.localhost"
	}
	if cfg.From == "" {
		cfg.From = "mxload@localhost"
	}
	if cfg.To == "" {
		cfg.To = "user@localhost"
	}
	for _, k := range cfg.Kinds {
		if !isAbuseKind(k) {
			return nil, fmt.Errorf("abuse kind %q: want one of %v", k, AbuseKinds)
		}
	}

	var cpu0 time.Duration
	if cfg.Procs != nil {
		var err error
		if cpu0, err = cfg.Procs.CPU(); err != nil {
			return nil, err
		}
	}
	outcomes := make([]abuseOutcome, cfg.Abusers)
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range outcomes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			outcomes = outcomes[:i]
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			outcomes[i] = abuseOne(ctx, &cfg, cfg.Kinds[i%len(cfg.Kinds)])
		})
	}
	wg.Wait()
	res := &AbuseResult{Elapsed: time.Since(start), Kinds: map[AbuseKind]*AbuseTally{}}
	res.tally(&cfg, outcomes)
	if cfg.Procs != nil {
		cpu1, err := cfg.Procs.CPU()
		if err != nil {
			return res, err // the server ended during the run
		}
		d := cpu1 - cpu0
		res.ServerCPU = &d
	}
	return res, nil
}

func isAbuseKind(k AbuseKind) bool { return slices.Contains(AbuseKinds, k) }

func cmp0int64(n, def int64) int64 {
	if n == 0 {
		return def
	}
	return n
}

// tally sorts the outcomes into per-kind figures.
func (r *AbuseResult) tally(cfg *AbuseConfig, outcomes []abuseOutcome) {
	type samples struct {
		sent, past []int64
		toCut      []time.Duration
	}
	all := map[AbuseKind]*samples{}
	for _, o := range outcomes {
		t := r.Kinds[o.kind]
		if t == nil {
			t = &AbuseTally{Limit: cfg.limit(o.kind), Replies: map[string]int{}, ErrorKinds: map[string]int{}}
			r.Kinds[o.kind] = t
			all[o.kind] = &samples{}
		}
		s := all[o.kind]
		t.Clients++
		r.Octets += o.sent
		switch {
		case o.closed.IsZero() && o.err != "" && o.sent == 0:
			t.Errors++
			t.ErrorKinds[o.err]++
			continue
		case o.closed.IsZero():
			t.Uncut++
			t.ErrorKinds[o.err]++
			continue
		}
		reply := o.reply
		if reply == "" {
			reply = "none"
		}
		t.Replies[reply]++
		if o.passed.IsZero() {
			t.Early++
			continue
		}
		t.Cut++
		s.sent = append(s.sent, o.sent)
		s.past = append(s.past, o.sent-t.Limit)
		s.toCut = append(s.toCut, o.closed.Sub(o.passed))
	}
	for k, t := range r.Kinds {
		s := all[k]
		t.Sent, t.PastLimit, t.ToCut = summarizeOctets(s.sent), summarizeOctets(s.past), summarize(s.toCut)
	}
}

// limit is where the server is expected to cut clients of kind k.
func (cfg *AbuseConfig) limit(k AbuseKind) int64 {
	if k == AbuseCommand {
		return cfg.LineMax
	}
	return cfg.MaxSize
}

// abuseChunks are the endless parts, one 16 KiB write each, and what goes
// before the first.
var abuseChunks = map[AbuseKind]struct{ prefix, chunk string }{
	AbuseHeader:  {"Subject: ", strings.Repeat("x", 16<<10)},
	AbuseData:    {"Subject: flood\r\n\r\n", strings.Repeat(strings.Repeat("y", 78)+"\r\n", 16<<10/80)},
	AbuseCommand: {"NOOP ", strings.Repeat("z", 16<<10)},
}

// abuseOne is one client from connect to its end.
func abuseOne(ctx context.Context, cfg *AbuseConfig, kind AbuseKind) abuseOutcome {
	o := abuseOutcome{kind: kind}
	c, v := dialSMTP(ctx, cfg.Bind, cfg.Addr, cfg.EHLO, false, cfg.Timeout)
	if !v.ok() {
		o.err = verdictKind(v)
		return o
	}
	defer c.close()
	if kind != AbuseCommand {
		for _, s := range []struct {
			step step
			line string
			want int
		}{
			{stepMail, "MAIL FROM:<" + cfg.From + ">", 250},
			{stepRcpt, "RCPT TO:<" + cfg.To + ">", 250},
			{stepData, "DATA", 354},
		} {
			if _, v := c.command(s.step, s.line); v.err != nil || v.code != s.want {
				o.err = verdictKind(v)
				return o
			}
		}
	}

	// The server's reply to the abuse, and its close, come while we are
	// still writing: a reader notes them. The writer learns of the close
	// too, when a write fails on the reset; whichever is first counts.
	var mu sync.Mutex
	seen := func(at time.Time) {
		mu.Lock()
		if o.closed.IsZero() || at.Before(o.closed) {
			o.closed = at
		}
		mu.Unlock()
	}
	c.conn.SetReadDeadline(time.Time{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		first := true
		for {
			line, err := c.r.ReadLine()
			if err != nil {
				seen(time.Now())
				return
			}
			if first {
				first = false
				code, _, _ := strings.Cut(line, " ")
				mu.Lock()
				o.reply = strings.TrimRight(code, "-")
				mu.Unlock()
			}
		}
	}()
	limit := cfg.limit(kind)
	ch := abuseChunks[kind]
	buf, chunk := []byte(ch.prefix+ch.chunk), []byte(ch.chunk)
	for {
		mu.Lock()
		closed := !o.closed.IsZero()
		mu.Unlock()
		if closed || ctx.Err() != nil {
			break
		}
		if o.sent >= cfg.Cap {
			o.err = "cap"
			break
		}
		c.conn.SetWriteDeadline(time.Now().Add(cfg.Timeout))
		n, err := c.conn.Write(buf)
		now := time.Now()
		o.sent += int64(n)
		if o.passed.IsZero() && o.sent > limit {
			o.passed = now
		}
		if err != nil {
			if errKind(err) == "timeout" {
				o.err = "timeout" // the server stopped reading but kept the connection
			} else {
				seen(now)
			}
			break
		}
		buf = chunk
	}
	if ctx.Err() != nil && o.err == "" {
		o.err = "cancelled"
	}
	if o.err != "" {
		c.conn.SetReadDeadline(time.Now()) // we give up: stop the reader
	} else {
		// The server closed: its reply may still be on the way to
		// the reader.
		c.conn.SetReadDeadline(time.Now().Add(cfg.Timeout))
	}
	<-read
	mu.Lock()
	defer mu.Unlock()
	if o.err != "" {
		o.closed = time.Time{} // our own giving up, not the server's cut
	}
	return o
}

// verdictKind names a failed setup step for counting: the error's kind,
// or the reply and the step it answered ("421 at DATA").
func verdictKind(v verdict) string {
	if v.err != nil {
		return errKind(v.err)
	}
	return strconv.Itoa(v.code) + " at " + string(v.step)
}

// WriteText prints r for people.
func (r *AbuseResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	n := 0
	for _, t := range r.Kinds {
		n += t.Clients
	}
	ew.printf("abusers    %d in %.3fs, %.1f MB sent in all\n", n, r.Elapsed.Seconds(), float64(r.Octets)/1e6)
	if r.ServerCPU != nil {
		ew.printf("server CPU %.2fs (user+system)\n", r.ServerCPU.Seconds())
	}
	for _, k := range AbuseKinds {
		t := r.Kinds[k]
		if t == nil {
			continue
		}
		ew.printf("%-10s %d clients, limit %d octets: cut %d, early %d, not cut %d, errors %d\n",
			k, t.Clients, t.Limit, t.Cut, t.Early, t.Uncut, t.Errors)
		for _, c := range counts(t.Replies).keys() {
			ew.printf("  reply    %s: %d\n", c, t.Replies[c])
		}
		for _, c := range counts(t.ErrorKinds).keys() {
			ew.printf("  error    %s: %d\n", c, t.ErrorKinds[c])
		}
		ew.printf("  sent before the cut:  %v\n", t.Sent)
		ew.printf("  past the limit:       %v\n", t.PastLimit)
		ew.printf("  limit to close:       %v\n", t.ToCut)
	}
	return ew.err
}

// MarshalJSON gives durations in seconds.
func (r *AbuseResult) MarshalJSON() ([]byte, error) {
	type tally struct {
		Clients    int              `json:"clients"`
		Limit      int64            `json:"limit"`
		Cut        int              `json:"cut"`
		Early      int              `json:"early"`
		Uncut      int              `json:"not_cut"`
		Errors     int              `json:"errors"`
		Replies    map[string]int   `json:"replies"`
		ErrorKinds map[string]int   `json:"error_kinds"`
		Sent       OctetPercentiles `json:"sent_octets"`
		PastLimit  OctetPercentiles `json:"past_limit_octets"`
		ToCut      Percentiles      `json:"limit_to_close"`
	}
	out := struct {
		Mode      string           `json:"mode"`
		Seconds   float64          `json:"seconds"`
		Octets    int64            `json:"octets"`
		ServerCPU *float64         `json:"server_cpu_seconds,omitempty"`
		Kinds     map[string]tally `json:"kinds"`
	}{Mode: "abuse", Seconds: r.Elapsed.Seconds(), Octets: r.Octets, Kinds: map[string]tally{}}
	if r.ServerCPU != nil {
		s := r.ServerCPU.Seconds()
		out.ServerCPU = &s
	}
	for k, t := range r.Kinds {
		out.Kinds[string(k)] = tally{t.Clients, t.Limit, t.Cut, t.Early, t.Uncut, t.Errors,
			t.Replies, t.ErrorKinds, t.Sent, t.PastLimit, t.ToCut}
	}
	return json.Marshal(out)
}

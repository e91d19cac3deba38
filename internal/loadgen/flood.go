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
	"time"
)

// FloodConfig describes a [Flood] run.
type FloodConfig struct {
	Addr        string        // server, host:port
	Concurrency int           // dialers at a time; 0 means 1
	Duration    time.Duration // how long to keep starting connections
	Bind        *AddrPool     // source addresses, round robin; nil lets the kernel choose
	Timeout     time.Duration // for the connect and for the first reply; 0 means 10s
}

// FloodResult is what a [Flood] run measured. Every connection attempt
// is counted in exactly one of Replies and Errors.
type FloodResult struct {
	Attempts int            // connections started
	Replies  map[string]int // first reply by code: "220", "421", "554" ...
	Errors   map[string]int // failures by kind: "EADDRNOTAVAIL", "ECONNRESET", "EOF", "timeout" ...
	Elapsed  time.Duration  // from the first connect until the last connection closed

	// FirstReply runs from starting to connect until the first reply
	// arrived, over connections that got one: the time a client waits to
	// learn its fate.
	FirstReply Percentiles
}

// ConnectionsPerSecond is attempts over the elapsed time.
func (r *FloodResult) ConnectionsPerSecond() float64 {
	return perSecond(float64(r.Attempts), r.Elapsed)
}

// Flood connects to cfg.Addr as fast as cfg.Concurrency dialers can for
// cfg.Duration (or until ctx ends), reads the first reply of each
// connection, answers a 2xx greeting with QUIT, and closes.
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
	}
	cfg.Concurrency = max(cfg.Concurrency, 1)
	cfg.Timeout = cmp0(cfg.Timeout, 10*time.Second)

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	tallies := make([]floodTally, cfg.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range tallies {
		wg.Go(func() { tallies[i] = floodWorker(ctx, &cfg) })
	}
	wg.Wait()
	res := &FloodResult{Elapsed: time.Since(start), Replies: map[string]int{}, Errors: map[string]int{}}
	var lat []time.Duration
	for _, t := range tallies {
		res.Attempts += t.attempts
		counts(res.Replies).merge(t.replies)
		counts(res.Errors).merge(t.errors)
		lat = append(lat, t.lat...)
	}
	res.FirstReply = summarize(lat)
	return res, nil
}

type floodTally struct {
	attempts        int
	replies, errors counts
	lat             []time.Duration
}

// floodWorker connects again and again until ctx ends. The connection
// under way when it ends is finished, not cancelled, so that the counts
// match what the server saw.
func floodWorker(ctx context.Context, cfg *FloodConfig) floodTally {
	t := floodTally{replies: counts{}, errors: counts{}}
	quit := []byte("QUIT\r\n")
	br := bufio.NewReaderSize(nil, 512)
	for ctx.Err() == nil {
		t.attempts++
		began := time.Now()
		conn, err := dial(context.WithoutCancel(ctx), cfg.Bind, cfg.Addr, cfg.Timeout)
		if err != nil {
			t.errors[errKind(err)]++
			continue
		}
		conn.SetDeadline(began.Add(cfg.Timeout))
		br.Reset(conn)
		code, _, err := textproto.NewReader(br).ReadResponse(0)
		if err != nil {
			t.errors[errKind(err)]++
			abort(conn)
			continue
		}
		t.lat = append(t.lat, time.Since(began))
		t.replies[strconv.Itoa(code)]++
		if code/100 == 2 {
			// A greeting deserves a goodbye; the reply does not matter.
			conn.Write(quit)
		}
		abort(conn)
	}
	return t
}

// WriteText prints r for people.
func (r *FloodResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("connections %d in %.3fs: %.1f/s\n", r.Attempts, r.Elapsed.Seconds(), r.ConnectionsPerSecond())
	for _, k := range counts(r.Replies).keys() {
		ew.printf("reply       %s: %d (%.1f/s)\n", k, r.Replies[k], perSecond(float64(r.Replies[k]), r.Elapsed))
	}
	for _, k := range counts(r.Errors).keys() {
		ew.printf("error       %s: %d\n", k, r.Errors[k])
	}
	ew.printf("first reply (connect to reply): %v\n", r.FirstReply)
	return ew.err
}

// MarshalJSON adds the rate and gives durations in seconds.
func (r *FloodResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Mode                 string         `json:"mode"`
		Attempts             int            `json:"connections"`
		Seconds              float64        `json:"seconds"`
		ConnectionsPerSecond float64        `json:"connections_per_second"`
		Replies              map[string]int `json:"replies"`
		Errors               map[string]int `json:"errors"`
		FirstReply           Percentiles    `json:"first_reply"`
	}{"flood", r.Attempts, r.Elapsed.Seconds(), r.ConnectionsPerSecond(), r.Replies, r.Errors, r.FirstReply})
}

package loadgen

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/smtpsink"
)

func TestFloodRejecting(t *testing.T) {
	srv := startLineServer(t, func(c net.Conn) {
		c.Write([]byte("421 4.3.2 test\r\n"))
	})
	res, err := Flood(testCtx(t), FloodConfig{
		Addr: srv.addr, Concurrency: 4, Duration: 300 * time.Millisecond,
		Bind: mustAddrs(t, "127.0.0.2-127.0.0.9"), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every connection the client finished was accepted first, and the
	// last ones finish before Flood returns: the counts must agree.
	accepted := int(srv.accepted.Load())
	if res.Attempts == 0 || res.Attempts != accepted || res.Replies["421"] != accepted || len(res.Replies) != 1 {
		t.Errorf("attempts %d, replies %v, errors %v; server accepted %d", res.Attempts, res.Replies, res.Errors, accepted)
	}
	if len(res.Errors) != 0 || res.FirstReply.Count != accepted {
		t.Errorf("errors %v, first-reply samples %d", res.Errors, res.FirstReply.Count)
	}
	t.Logf("%d connections, %.0f/s", res.Attempts, res.ConnectionsPerSecond())
}

func TestFloodSink(t *testing.T) {
	s := startSink(t)
	res, err := Flood(testCtx(t), FloodConfig{Addr: s.Addr, Concurrency: 4, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts == 0 || res.Replies["220"] != res.Attempts || len(res.Errors) != 0 {
		t.Errorf("attempts %d, replies %v, errors %v; want a 220 for each", res.Attempts, res.Replies, res.Errors)
	}
}

// floodFailure is a server that fails each connection one way, and the
// error kind a flood counts it as.
type floodFailure struct {
	name string
	addr func(t testing.TB) string
	want string
}

// floodFailures are the failures both flood modes count alike.
var floodFailures = []floodFailure{
	{"nobody listening", smtpsink.FreePort, "ECONNREFUSED"},
	{"closed without a reply", func(t testing.TB) string {
		return startLineServer(t, func(net.Conn) {}).addr
	}, "EOF"},
	{"garbage reply", func(t testing.TB) string {
		return startLineServer(t, func(c net.Conn) { c.Write([]byte("hello there\r\n")) }).addr
	}, "protocol"},
}

func TestFloodErrors(t *testing.T) {
	tests := floodFailures
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Flood(testCtx(t), FloodConfig{Addr: tt.addr(t), Concurrency: 2, Duration: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Attempts == 0 || res.Errors[tt.want] != res.Attempts || len(res.Replies) != 0 {
				t.Errorf("attempts %d, errors %v, replies %v; want all %s", res.Attempts, res.Errors, res.Replies, tt.want)
			}
		})
	}
}

func TestFloodOutput(t *testing.T) {
	srv := startLineServer(t, func(c net.Conn) { c.Write([]byte("554 5.7.1 go away\r\n")) })
	res, err := Flood(testCtx(t), FloodConfig{Addr: srv.addr, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkText(t, res, "reply       554: ")
	var got struct {
		Mode    string         `json:"mode"`
		Conns   int            `json:"connections"`
		Replies map[string]int `json:"replies"`
	}
	if b := viaJSON(t, res, &got); got.Mode != "flood" || got.Conns != res.Attempts || got.Replies["554"] != res.Attempts {
		t.Errorf("JSON %s", b)
	}
}

func TestFloodConfigErrors(t *testing.T) {
	for _, cfg := range []FloodConfig{
		{Duration: time.Second},
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:1", Duration: time.Second, Concurrency: -1},
		{Addr: "127.0.0.1:1", Duration: time.Second, Rate: -1},
		{Addr: "127.0.0.1:1", Duration: time.Second, Rate: 1e7},
		{Addr: "127.0.0.1:1", Duration: time.Second, Rate: 10, MaxOutstanding: -1},
		{Addr: "127.0.0.1:1", Duration: time.Second, Rate: 10, Engine: "uring"},
		{Addr: "127.0.0.1:1", Duration: time.Second, Engine: "epoll"}, // closed loop
	} {
		if _, err := Flood(testCtx(t), cfg); err == nil {
			t.Errorf("Flood(%+v) succeeded", cfg)
		}
	}
}

// TestFloodRate checks the open loop's bookkeeping: every start of the
// schedule is made or dropped, each one made reached the server and got
// its reply, and with room for all of them none is dropped. Nothing here
// depends on how punctually the starts were made.
func TestFloodRate(t *testing.T) {
	for _, engine := range engines() {
		t.Run(engine, func(t *testing.T) { testFloodRate(t, engine) })
	}
}

// engines lists the open loop's engines this system has.
func engines() []string {
	if epollAvailable {
		return []string{"net", "epoll"}
	}
	return []string{"net"}
}

func testFloodRate(t *testing.T, engine string) {
	srv := startLineServer(t, func(c net.Conn) {
		// A multi-line refusal, in two writes: the engine must wait for
		// its last line.
		c.Write([]byte("421-4.3.2 test\r\n"))
		time.Sleep(time.Millisecond)
		c.Write([]byte("421 4.3.2 test\r\n"))
	})
	const rate, d = 500.0, 400 * time.Millisecond
	res, err := Flood(testCtx(t), FloodConfig{
		Addr: srv.addr, Rate: rate, Duration: d, Engine: engine,
		Bind: mustAddrs(t, "127.0.0.2-127.0.0.9"), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := newSchedule(rate, d)
	accepted := int(srv.accepted.Load())
	if res.Attempts+res.Dropped != int(s.total) || res.Dropped != 0 {
		t.Errorf("%d attempts and %d dropped, want all %d made", res.Attempts, res.Dropped, s.total)
	}
	if res.Attempts != accepted || res.Replies["421"] != accepted || len(res.Errors) != 0 {
		t.Errorf("attempts %d, replies %v, errors %v; server accepted %d", res.Attempts, res.Replies, res.Errors, accepted)
	}
	if res.StartLag.Count != res.Attempts || res.FirstReply.Count != res.Attempts {
		t.Errorf("%d start lags and %d first replies for %d attempts", res.StartLag.Count, res.FirstReply.Count, res.Attempts)
	}
	if res.RefusedInWindow > res.Attempts || res.Window < d || res.Elapsed < res.Window {
		t.Errorf("refused in window %d of %d; window %v, elapsed %v, duration %v",
			res.RefusedInWindow, res.Attempts, res.Window, res.Elapsed, d)
	}
	checkText(t, res, "rate        500.0/s asked", "refusals    ", "start lag")
	var got struct {
		Rate    float64 `json:"rate"`
		Conns   int     `json:"connections"`
		Dropped int     `json:"dropped"`
		Refused int     `json:"refused_in_window"`
		RPS     float64 `json:"refusals_per_second"`
	}
	if b := viaJSON(t, res, &got); got.Rate != rate || got.Conns != res.Attempts || got.Refused != res.RefusedInWindow ||
		got.RPS != res.RefusalsPerSecond() {
		t.Errorf("JSON %s", b)
	}
}

// TestFloodRateOutstanding has a server that holds every connection
// without a word for longer than the schedule lasts: only MaxOutstanding
// starts can be made, and the rest are dropped rather than queued. Its
// refusals come after the window and are not counted in it.
func TestFloodRateOutstanding(t *testing.T) {
	for _, engine := range engines() {
		t.Run(engine, func(t *testing.T) { testFloodRateOutstanding(t, engine) })
	}
}

func testFloodRateOutstanding(t *testing.T, engine string) {
	srv := startLineServer(t, func(c net.Conn) {
		time.Sleep(2 * time.Second)
		c.Write([]byte("421 4.3.2 late\r\n"))
	})
	const rate, d, limit = 400.0, 100 * time.Millisecond, 5
	res, err := Flood(testCtx(t), FloodConfig{
		Addr: srv.addr, Rate: rate, Duration: d, MaxOutstanding: limit, Timeout: 30 * time.Second, Engine: engine,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := newSchedule(rate, d)
	if res.Attempts != limit || res.Dropped != int(s.total)-limit {
		t.Errorf("%d attempts and %d dropped, want %d and %d", res.Attempts, res.Dropped, limit, int(s.total)-limit)
	}
	if res.Replies["421"] != limit || res.RefusedInWindow != 0 || res.RefusalsPerSecond() != 0 {
		t.Errorf("replies %v, errors %v, refused in window %d; want %d late 421s", res.Replies, res.Errors, res.RefusedInWindow, limit)
	}
}

// TestFloodRateCancel ends the flood early through its context, as
// mxload does on SIGINT: the schedule stops there, and what was started is
// all counted.
func TestFloodRateCancel(t *testing.T) {
	for _, engine := range engines() {
		t.Run(engine, func(t *testing.T) { testFloodRateCancel(t, engine) })
	}
}

func testFloodRateCancel(t *testing.T, engine string) {
	srv := startLineServer(t, func(c net.Conn) { c.Write([]byte("554 5.7.1 no\r\n")) })
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	res, err := Flood(ctx, FloodConfig{Addr: srv.addr, Rate: 100, Duration: time.Hour, Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts == 0 || res.Attempts != int(srv.accepted.Load()) || res.Replies["554"] != res.Attempts {
		t.Errorf("attempts %d, replies %v, errors %v; server accepted %d", res.Attempts, res.Replies, res.Errors, srv.accepted.Load())
	}
	if res.Window >= time.Hour || res.Attempts >= 360000 {
		t.Errorf("window %v, %d attempts: the schedule ran on after ctx ended", res.Window, res.Attempts)
	}
}

// TestFloodRateErrors: each engine counts each failure by its kind, the
// same kinds, and a server that says nothing by the timeout.
func TestFloodRateErrors(t *testing.T) {
	tests := append(floodFailures[:len(floodFailures):len(floodFailures)], floodFailure{"silent", func(t testing.TB) string {
		return startLineServer(t, func(net.Conn) { time.Sleep(2 * time.Second) }).addr
	}, "timeout"})
	for _, engine := range engines() {
		for _, tt := range tests {
			t.Run(engine+"/"+tt.name, func(t *testing.T) {
				res, err := Flood(testCtx(t), FloodConfig{Addr: tt.addr(t), Rate: 50, Duration: 100 * time.Millisecond,
					Timeout: 300 * time.Millisecond, Engine: engine})
				if err != nil {
					t.Fatal(err)
				}
				if res.Attempts != 5 || res.Errors[tt.want] != 5 || len(res.Replies) != 0 {
					t.Errorf("attempts %d, errors %v, replies %v; want 5 %s", res.Attempts, res.Errors, res.Replies, tt.want)
				}
			})
		}
	}
}

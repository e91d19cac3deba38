package loadgen

import (
	"net"
	"testing"
	"time"
)

func TestIdleSink(t *testing.T) {
	for _, ehloFirst := range []bool{false, true} {
		name := "silent"
		if ehloFirst {
			name = "EHLO first"
		}
		t.Run(name, func(t *testing.T) {
			s := startSink(t)
			procs, err := ParseProcs(itoa(s.PID))
			if err != nil {
				t.Fatal(err)
			}
			const n = 60
			var progress []IdleSample
			res, err := Idle(testCtx(t), IdleConfig{
				Addr: s.Addr, Conns: n, Concurrency: 8, Bind: mustAddrs(t, "127.0.0.2-127.0.0.4"),
				// Held long enough for every greeting to come in on a
				// loaded machine (47 of 60 in 300ms seen).
				EHLOFirst: ehloFirst, Hold: 2 * time.Second, Interval: 100 * time.Millisecond,
				Procs:    procs,
				Progress: func(s IdleSample) { progress = append(progress, s) },
			})
			if err != nil {
				t.Fatal(err)
			}
			last := res.Last()
			if res.Opened != n || last.Open != n || last.Greeted != n {
				t.Errorf("opened %d, open %d, greeted %d at the end; want %d", res.Opened, last.Open, last.Greeted, n)
			}
			if len(res.Errors)+len(res.Refused)+len(res.Closed) != 0 {
				t.Errorf("errors %v, refused %v, closed %v", res.Errors, res.Refused, res.Closed)
			}
			if len(res.Samples) < 2 || len(progress) != len(res.Samples) {
				t.Errorf("%d samples, %d progress calls", len(res.Samples), len(progress))
			}
			if res.Baseline == nil || res.Baseline.Procs != 1 || res.Baseline.RSS <= 0 || res.Baseline.PSS <= 0 ||
				last.Mem == nil || last.Mem.Procs != 1 {
				t.Fatalf("memory before %+v, at end %+v; want smtp-sink's", res.Baseline, last.Mem)
			}
			if _, _, ok := res.BytesPerConn(); !ok {
				t.Error("no bytes per connection")
			}
		})
	}
}

// TestIdleServerCloses checks that connections the server drops stop
// counting as open: a listener that greets every connection and closes
// every other one right away.
func TestIdleServerCloses(t *testing.T) {
	const n = 40
	release := make(chan struct{})
	odd := make(chan bool, n)
	for k := range n {
		odd <- k%2 == 1
	}
	srv := startLineServer(t, func(c net.Conn) {
		c.Write([]byte("220 hi\r\n"))
		if <-odd {
			return
		}
		<-release // hold it open until the test ends
	})
	t.Cleanup(func() { close(release) })
	res, err := Idle(testCtx(t), IdleConfig{Addr: srv.addr, Conns: n, Hold: 200 * time.Millisecond, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	last := res.Last()
	if res.Opened != n || last.Open != n/2 || last.Greeted != n || res.Closed["EOF"] != n/2 {
		t.Errorf("opened %d, open %d, greeted %d, closed %v; want %d, %d, %d, %d × EOF",
			res.Opened, last.Open, last.Greeted, res.Closed, n, n/2, n, n/2)
	}

	checkText(t, res, "closed     by server, EOF: 20")
	var got struct {
		Open    int            `json:"open_at_end"`
		Closed  map[string]int `json:"closed_by_server"`
		Samples []any          `json:"samples"`
	}
	if b := viaJSON(t, res, &got); got.Open != n/2 || got.Closed["EOF"] != n/2 || len(got.Samples) != len(res.Samples) {
		t.Errorf("JSON %s", b)
	}
}

func TestIdleRefused(t *testing.T) {
	srv := startLineServer(t, func(c net.Conn) { c.Write([]byte("421 4.3.2 Too many open connections.\r\n")) })
	res, err := Idle(testCtx(t), IdleConfig{Addr: srv.addr, Conns: 10, EHLOFirst: true, Hold: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 0 || res.Refused["421"] != 10 || res.Last().Open != 0 {
		t.Errorf("opened %d, refused %v, open %d; want 10 refused with 421", res.Opened, res.Refused, res.Last().Open)
	}
}

func TestIdleConfigErrors(t *testing.T) {
	for _, cfg := range []IdleConfig{
		{Conns: 1},
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:1", Conns: 1, Hold: -time.Second},
		{Addr: "127.0.0.1:1", Conns: 1, Concurrency: -2},
	} {
		if _, err := Idle(testCtx(t), cfg); err == nil {
			t.Errorf("Idle(%+v) succeeded", cfg)
		}
	}
}

package deliver

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/spool"
)

// removalClock is a slog.Handler that passes on the time of each "message
// finished, removed from spool" record, which the Queue logs as soon as
// the removal is durable.
type removalClock chan time.Time

func (h removalClock) Enabled(context.Context, slog.Level) bool { return true }
func (h removalClock) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h removalClock) WithGroup(string) slog.Handler            { return h }
func (h removalClock) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "message finished, removed from spool" {
		h <- r.Time
	}
	return nil
}

// BenchmarkRelayRetireWindow measures the window in which a crash makes a
// relayed message a duplicate: from the downstream writing its 250 to the
// final dot (it has the message) to the spool's removal of it being
// durable (it will not be sent again). One worker relays one message at a
// time to a scripted loopback peer, which timestamps its reply; the
// window is reported as its mean, median and 90th percentile. The peer
// answers at once (loopback) or after 2ms per reply, as a downstream
// across a network or under load would.
func BenchmarkRelayRetireWindow(b *testing.B) {
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		b.Run("reply_delay="+delay.String(), func(b *testing.B) { benchRetireWindow(b, delay) })
	}
}

func benchRetireWindow(b *testing.B, delay time.Duration) {
	sp, err := spool.Open(filepath.Join(b.TempDir(), "spool"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	sent := make(chan time.Time, 1)
	p := &peer{finalSent: sent, delay: delay}
	addr := p.start(b)
	r, err := NewRelay("smtp://"+addr, "mx.test", fastTimeouts, nil)
	if err != nil {
		b.Fatal(err)
	}
	removed := make(removalClock, 1)
	q := NewQueue(sp, r, QueueConfig{Hostname: "mx.test", Workers: 1}, slog.New(removed))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	var windows []time.Duration
	for b.Loop() {
		w, err := sp.Create(&spool.Envelope{From: "a@example.org", Rcpts: []spool.Rcpt{{Addr: "b@example.net"}}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write([]byte(testBody)); err != nil {
			b.Fatal(err)
		}
		id, err := w.Commit()
		if err != nil {
			b.Fatal(err)
		}
		q.Enqueue(id)
		var at, gone time.Time
		timeout := time.After(10 * time.Second)
		for at.IsZero() || gone.IsZero() {
			select {
			case at = <-sent:
			case gone = <-removed:
			case <-timeout:
				b.Fatal("message not relayed and removed within 10s")
			}
		}
		windows = append(windows, gone.Sub(at))
	}
	slices.Sort(windows)
	var sum time.Duration
	for _, w := range windows {
		sum += w
	}
	n := len(windows)
	b.ReportMetric(float64(sum.Microseconds())/float64(n), "µs-window-mean")
	b.ReportMetric(float64(windows[n/2].Microseconds()), "µs-window-p50")
	b.ReportMetric(float64(windows[n*9/10].Microseconds()), "µs-window-p90")
}

package spool

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkCommit1KiB commits 1 KiB messages from 20 concurrent sessions
// and reports durable messages per second and fsyncs per message: every
// fsync of a message file, a log segment or a directory, divided by the
// messages committed. (bench/run.sh reads it by this name.)
func BenchmarkCommit1KiB(b *testing.B) { benchCommit(b, 20, 1024) }

// BenchmarkCommit1KiB50 is the same with 50 sessions, issue 13's workload.
func BenchmarkCommit1KiB50(b *testing.B) { benchCommit(b, 50, 1024) }

func benchCommit(b *testing.B, sessions, size int) {
	s := openSpool(b, "")
	body := bytes.Repeat([]byte("x"), size)
	b.SetParallelism((sessions + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	before := s.Stats()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w, err := s.Create(testEnvelope("sender@example.org", "rcpt@example.com"))
			if err != nil {
				b.Error(err)
				return
			}
			w.Write(body)
			if _, err := w.Commit(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	after := s.Stats()
	n := float64(after.Commits - before.Commits)
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(syncs(after)-syncs(before))/n, "fsyncs/msg")
}

// BenchmarkCommit10MiB commits large messages written in 64 KiB chunks.
// B/op is the same for 1 MiB and 10 MiB: the body is streamed, not held.
func BenchmarkCommit10MiB(b *testing.B) {
	chunk := pseudoRandom(64<<10, 3)
	for _, size := range []int{1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			s := openSpool(b, "")
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				w, err := s.Create(testEnvelope("sender@example.org", "rcpt@example.com"))
				if err != nil {
					b.Fatal(err)
				}
				for range size / len(chunk) {
					w.Write(chunk)
				}
				id, err := w.Commit()
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Remove(id); err != nil { // keep the disk use flat
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkEnvelope measures reading and checking a queued envelope, which
// a queue run does for every message.
func BenchmarkEnvelope(b *testing.B) {
	s := openSpool(b, "")
	id := commit(b, s, testEnvelope("sender@example.org", "a@example.com", "b@example.com"), []byte("body"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Envelope(id); err != nil {
			b.Fatal(err)
		}
	}
}

// syncs is every fsync counted in st.
func syncs(st Stats) int64 { return st.FileSyncs + st.DirSyncs + st.LogSyncs }

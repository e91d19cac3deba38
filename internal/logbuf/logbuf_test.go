package logbuf

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer records writes; each Write is one element.
type syncBuffer struct {
	mu     sync.Mutex
	writes []string
	wrote  chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.writes = append(s.writes, string(p))
	s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func TestBatchesAndFlushesWithinDelay(t *testing.T) {
	out := &syncBuffer{wrote: make(chan struct{}, 1)}
	w := New(out, 20*time.Millisecond)
	for i := 0; i < 100; i++ {
		w.Write([]byte("line\n"))
	}
	select {
	case <-out.wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing flushed after the delay")
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if len(out.writes) != 1 || out.writes[0] != strings.Repeat("line\n", 100) {
		t.Fatalf("100 lines reached the output in %d writes", len(out.writes))
	}
}

func TestKeepsLinesWhole(t *testing.T) {
	out := &syncBuffer{wrote: make(chan struct{}, 1)}
	w := New(out, time.Hour)
	line := bytes.Repeat([]byte("x"), 1000)
	line[len(line)-1] = '\n'
	for i := 0; i < 200; i++ { // 200 KB: several buffers full
		w.Write(line)
	}
	w.Flush()
	out.mu.Lock()
	defer out.mu.Unlock()
	total := 0
	for _, s := range out.writes {
		if !strings.HasSuffix(s, "\n") {
			t.Fatalf("a write ends mid-line: ...%q", s[len(s)-10:])
		}
		total += len(s)
	}
	if total != 200*1000 {
		t.Fatalf("%d bytes written, want %d", total, 200*1000)
	}
}

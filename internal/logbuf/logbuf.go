// Package logbuf batches log output. Under a connection flood mxguard
// writes one rejection line per refused connection (fail2ban and grep need
// every one), and a write(2) per line was a tenth of the server's CPU; lines
// collected for a few milliseconds and written together cost a fraction of
// that, and reach the log file hardly later.
package logbuf

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Writer buffers writes to an underlying writer and flushes them at most
// Delay after the first buffered byte, when the buffer fills, and on Flush.
// Each Write is kept whole. It is safe for concurrent use.
type Writer struct {
	mu      sync.Mutex
	w       *bufio.Writer
	delay   time.Duration
	pending bool // a flush is scheduled
}

// New returns a Writer flushing to w within delay.
func New(w io.Writer, delay time.Duration) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10), delay: delay}
}

// Write buffers p.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) > b.w.Available() && b.w.Buffered() > 0 {
		b.w.Flush() // keep lines whole: never split one across two writes
	}
	n, err := b.w.Write(p)
	if !b.pending && b.w.Buffered() > 0 {
		b.pending = true
		time.AfterFunc(b.delay, func() { b.Flush() })
	}
	return n, err
}

// Flush writes what is buffered now.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pending = false
	return b.w.Flush()
}

package spool

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"time"
)

// A Writer receives the body of one message. It is not safe for concurrent
// use. Every Writer must end with Commit or Abort; the usual pattern is
//
//	w, err := s.Create(env)
//	...
//	defer w.Abort() // does nothing once Commit has succeeded
//	io.Copy(w, data)
//	id, err := w.Commit()
type Writer struct {
	s    *Spool
	env  *Envelope
	f    *os.File
	bw   *bufio.Writer
	crc  uint32
	n    int64
	err  error // first write error; Commit reports it
	done bool  // committed or discarded
}

var errWriterDone = errors.New("spool: message already committed or aborted")

// Create starts a message with envelope env, which must have at least one
// recipient. env.ID, when set, must come from NewID (a caller that names
// the message in its own Received: header takes the ID first); otherwise
// Commit assigns one. The body is streamed to a temporary file through the returned
// Writer: it is never held in memory, whatever its size. env belongs to the
// spool until Commit or Abort returns.
func (s *Spool) Create(env *Envelope) (*Writer, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	if len(env.Rcpts) == 0 {
		return nil, errors.New("spool: envelope has no recipients")
	}
	f, err := os.CreateTemp(s.tmp, "msg-")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	bw := s.bufs.Get().(*bufio.Writer)
	bw.Reset(f)
	return &Writer{s: s, env: env, f: f, bw: bw}, nil
}

// Write appends p to the body. After an error, every later Write and Commit
// returns that error; the caller should Abort.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriterDone
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.bw.Write(p)
	w.crc = crc32.Update(w.crc, crcTable, p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("spool: writing %s: %w", w.f.Name(), err)
	}
	return n, w.err
}

// Commit makes the message durable and queued. When it returns nil the
// message file has been fsynced, renamed into the queue and the queue
// directory fsynced, so the message survives a crash or a power cut: only
// then may the server reply 250. Commit sets env.ID, env.Size and, if it is
// zero, env.Received. The directory fsync is shared with concurrent
// Commits, Updates and Removes. On error nothing is queued and the
// temporary file is gone.
func (w *Writer) Commit() (string, error) {
	if w.done {
		return "", errWriterDone
	}
	id, received, err := w.commit()
	if err != nil {
		w.discard()
		return "", err
	}
	w.done = true
	w.release()
	w.env.ID, w.env.Size, w.env.Received = id, w.n, received
	w.s.stats.commits.Add(1)
	return id, nil
}

func (w *Writer) commit() (id string, received time.Time, err error) {
	if w.err != nil {
		return "", time.Time{}, w.err
	}
	now := time.Now()
	env := *w.env
	if env.ID == "" {
		env.ID = w.s.ids.next(now)
	} // else the caller took it from NewID to name the message in its Received: header
	env.Size = w.n
	if env.Received.IsZero() {
		env.Received = now
	}
	envJSON, err := marshalEnvelope(&env)
	if err != nil {
		return "", time.Time{}, err
	}
	if _, err := w.bw.Write(appendTrailer(nil, w.n, w.crc, envJSON)); err != nil {
		return "", time.Time{}, fmt.Errorf("spool: writing %s: %w", w.f.Name(), err)
	}
	if err := w.bw.Flush(); err != nil {
		return "", time.Time{}, fmt.Errorf("spool: writing %s: %w", w.f.Name(), err)
	}
	// Each session fsyncs its own file, concurrently with the others:
	// that is the one cost per message the directory batching cannot
	// share (see the package documentation for the measurements).
	if err := w.s.syncFile(w.f); err != nil {
		return "", time.Time{}, err
	}
	if err := w.f.Close(); err != nil {
		return "", time.Time{}, fmt.Errorf("spool: %w", err)
	}
	tmp, dst := w.f.Name(), w.s.messagePath(env.ID)
	renamed := false
	err = w.s.commitDir(func() error {
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		renamed = true
		return nil
	})
	if err != nil && renamed {
		// The rename happened but its durability is unknown. The client
		// gets a temporary failure and will send again, so take the
		// message back rather than risk delivering it twice.
		if rerr := os.Remove(dst); rerr != nil {
			w.s.logger.Error("spool: cannot withdraw message after failed commit", "id", env.ID, "err", rerr)
		}
	}
	if err != nil {
		return "", time.Time{}, err
	}
	return env.ID, env.Received, nil
}

// Abort discards the message. It may be called at any time, any number of
// times; after a successful Commit it does nothing.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	return w.discard()
}

func (w *Writer) discard() error {
	w.done = true
	w.release()
	w.f.Close() // may already be closed by a failed Commit
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// release returns the buffer to the pool.
func (w *Writer) release() {
	if w.bw != nil {
		w.bw.Reset(nil)
		w.s.bufs.Put(w.bw)
		w.bw = nil
	}
}

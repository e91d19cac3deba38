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
//
// The body is held in memory while it fits in the log (logMax); past that
// it goes to a temporary file, and the message is committed as a file of
// its own.
type Writer struct {
	s    *Spool
	env  *Envelope
	rec  *[]byte // the log record being built; nil once the body has gone to f
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
// Commit assigns one. A body of up to 64 KiB is held in memory until
// Commit appends it to the log; a longer one is streamed to a temporary
// file through a fixed buffer, so it is never held in memory, whatever its
// size. env belongs to the spool until Commit or Abort returns.
func (s *Spool) Create(env *Envelope) (*Writer, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	if len(env.Rcpts) == 0 {
		return nil, errors.New("spool: envelope has no recipients")
	}
	rec := s.recs.Get().(*[]byte)
	*rec = newRecord(*rec, recordMessage)
	return &Writer{s: s, env: env, rec: rec}, nil
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
	if w.rec != nil {
		if w.n+int64(len(p)) <= logMax {
			*w.rec = append(*w.rec, p...)
			w.crc = crc32.Update(w.crc, crcTable, p)
			w.n += int64(len(p))
			return len(p), nil
		}
		if err := w.spill(); err != nil {
			w.err = err
			return 0, err
		}
	}
	n, err := w.bw.Write(p)
	w.crc = crc32.Update(w.crc, crcTable, p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("spool: writing %s: %w", w.f.Name(), err)
	}
	return n, w.err
}

// spill moves the body so far from memory to a temporary file, from which
// Commit will make the message a file of its own.
func (w *Writer) spill() error {
	f, err := os.CreateTemp(w.s.tmp, "msg-")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	w.f = f
	w.bw = w.s.bufs.Get().(*bufio.Writer)
	w.bw.Reset(f)
	_, err = w.bw.Write((*w.rec)[recHeaderLen:])
	w.releaseRec() // only now: the pool may hand it to another session
	if err != nil {
		return fmt.Errorf("spool: writing %s: %w", f.Name(), err)
	}
	return nil
}

// Commit makes the message durable and queued: only then may the server
// reply 250. A body that fits in the log is appended to it and the log
// fdatasynced, an fsync shared with every concurrent Commit, Remove and
// Update of messages in the log. A longer one's file is fsynced, renamed
// into the queue and the queue directory fsynced, an fsync shared with
// concurrent Commits, Updates and Removes of files. Commit sets env.ID,
// env.Size and, if it is zero, env.Received. On error nothing is queued.
func (w *Writer) Commit() (string, error) {
	if w.done {
		return "", errWriterDone
	}
	var id string
	var received time.Time
	var err error
	if w.rec != nil {
		id, received, err = w.commitLog()
	} else {
		id, received, err = w.commitFile()
	}
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

// envelope is the envelope as committed: ID, size and time filled in.
func (w *Writer) envelope(now time.Time) Envelope {
	env := *w.env
	if env.ID == "" {
		env.ID = w.s.ids.next(now)
	} // else the caller took it from NewID to name the message in its Received: header
	env.Size = w.n
	if env.Received.IsZero() {
		env.Received = now
	}
	return env
}

func (w *Writer) commitLog() (id string, received time.Time, err error) {
	if w.err != nil {
		return "", time.Time{}, w.err
	}
	env := w.envelope(time.Now())
	envJSON, err := marshalEnvelope(&env)
	if err != nil {
		return "", time.Time{}, err
	}
	*w.rec = append(*w.rec, envJSON...)
	finishRecord(*w.rec, int(w.n), w.crc)
	if err := w.s.log.append(*w.rec, env.ID); err != nil {
		return "", time.Time{}, err
	}
	return env.ID, env.Received, nil
}

func (w *Writer) commitFile() (id string, received time.Time, err error) {
	if w.err != nil {
		return "", time.Time{}, w.err
	}
	env := w.envelope(time.Now())
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
	if w.f == nil {
		return nil
	}
	w.f.Close() // may already be closed by a failed Commit
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// release returns the buffers to their pools.
func (w *Writer) release() {
	w.releaseRec()
	if w.bw != nil {
		w.bw.Reset(nil)
		w.s.bufs.Put(w.bw)
		w.bw = nil
	}
}

func (w *Writer) releaseRec() {
	if w.rec != nil {
		if cap(*w.rec) <= maxRecBuf {
			w.s.recs.Put(w.rec)
		}
		w.rec = nil
	}
}

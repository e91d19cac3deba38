package spool

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Errors returned by the Spool. Others wrap the underlying *fs.PathError.
var (
	ErrClosed   = errors.New("spool: closed")
	ErrNotFound = errors.New("spool: no such message")
	ErrBadID    = errors.New("spool: malformed message ID")
)

const (
	queueDir   = "queue"
	tmpDir     = "tmp"
	corruptDir = "corrupt"
	lockFile   = "lock"
	// stateSuffix marks the state file that Update writes beside a message.
	stateSuffix = ".st"
	// maxBatch bounds one group commit so that the first waiter of a huge
	// burst is not held up by thousands of renames behind it.
	maxBatch = 512
	// writeBuffer is the buffer between Writer.Write and the file: large
	// enough to turn a DATA reader's line-sized writes into few syscalls,
	// small enough for thousands of concurrent sessions.
	writeBuffer = 32 << 10
)

// A Spool is a durable message queue in one directory. Its methods are safe
// for concurrent use. Only one process at a time may open a directory.
type Spool struct {
	dir     string
	queue   string              // committed messages and their state files
	tmp     string              // files being written; emptied by Open
	qdir    *os.File            // queue, kept open to fsync it
	onFsync func(time.Duration) // nil: fsyncs not timed
	lock    *os.File            // holds the flock that keeps other processes out
	logger  *slog.Logger
	ids     idGen
	bufs    sync.Pool // *bufio.Writer of writeBuffer bytes
	recs    sync.Pool // *[]byte: log records being written
	log     *msgLog   // small messages

	// ops feeds the committer goroutine of the queue directory, log.ops
	// that of the log. mu guards closing them: senders hold the read
	// lock, Close the write lock.
	mu     sync.RWMutex
	closed bool
	ops    chan dirOp
	done   chan struct{} // closed when the committer has returned

	stats struct {
		commits, updates, removes, fileSyncs, dirSyncs, logSyncs, retired, forwarded atomic.Int64
	}
}

// A dirOp is a change to the queue directory that becomes durable with the
// next directory fsync.
type dirOp struct {
	apply func() error
	done  chan error
}

// Stats counts the spool's work since Open, for benchmarks and metrics.
type Stats struct {
	Commits   int64 // messages committed
	Updates   int64 // state rewrites
	Removes   int64 // messages removed
	FileSyncs int64 // fsyncs of message, state and new segment files
	DirSyncs  int64 // fsyncs of the queue directory (one per group commit) and of the log's
	LogSyncs  int64 // fdatasyncs of the log, one per group commit of the log
	Retired   int64 // log segments deleted, every message in them gone
	Forwarded int64 // done records appended again so that their segment could go
}

// Open opens the spool in dir, creating its layout if needed. It removes
// what a crash can leave behind: files in tmp/ (never committed, so never
// acknowledged) and state files whose message was being removed. Committed
// messages are not touched. The logger receives a summary and I/O errors.
func Open(dir string, logger *slog.Logger, opts ...Option) (*Spool, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Spool{
		dir:    dir,
		queue:  filepath.Join(dir, queueDir),
		tmp:    filepath.Join(dir, tmpDir),
		logger: logger,
		ops:    make(chan dirOp, maxBatch),
		done:   make(chan struct{}),
	}
	s.log = &msgLog{
		s:       s,
		dir:     filepath.Join(dir, logDir),
		segSize: defaultSegmentSize,
		ops:     make(chan *logOp, maxBatch),
		stopped: make(chan struct{}),
		index:   map[string]*logEntry{},
		segs:    map[uint64]*segment{},
	}
	for _, o := range opts {
		o(s)
	}
	s.bufs.New = func() any { return bufio.NewWriterSize(nil, writeBuffer) }
	s.recs.New = func() any { b := make([]byte, 0, 4<<10); return &b }
	for _, d := range []string{s.queue, s.tmp, s.log.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// The lock keeps a second process from deleting this one's temporary
	// files and from delivering its messages twice.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool: %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("spool: locking %s: %w", dir, err)
	}
	s.lock = lock
	if s.qdir, err = os.Open(s.queue); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	if s.log.dirF, err = os.Open(s.log.dir); err != nil {
		s.qdir.Close()
		lock.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	moved, err := s.recover()
	if err != nil {
		s.log.close()
		s.qdir.Close()
		lock.Close()
		return nil, err
	}
	go s.commitLoop()
	go s.log.run()
	// A message in the log and in a file of its own was being moved out
	// of the log by Update: the file is the newer, so the record goes.
	for _, id := range moved {
		if err := s.log.append(doneRecord(nil, id), id); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// recover cleans up after a crash, reads the log and makes the layout
// itself durable. It returns the IDs of the messages that are both in the
// log and in files of their own.
func (s *Spool) recover() (moved []string, err error) {
	temps, err := os.ReadDir(s.tmp)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, e := range temps {
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil {
			return nil, fmt.Errorf("spool: removing leftover: %w", err)
		}
	}
	entries, err := os.ReadDir(s.queue)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	messages := make(map[string]bool, len(entries))
	for _, e := range entries {
		if validID(e.Name()) {
			messages[e.Name()] = true
		}
	}
	orphans := 0
	for _, e := range entries {
		name := e.Name()
		id, isState := strings.CutSuffix(name, stateSuffix)
		switch {
		case validID(name):
		case isState && validID(id) && !messages[id]:
			// Remove deletes the message first, so a state file alone
			// is the rest of an interrupted Remove.
			if err := os.Remove(filepath.Join(s.queue, name)); err != nil {
				return nil, fmt.Errorf("spool: removing leftover: %w", err)
			}
			orphans++
		case isState && validID(id):
		default:
			s.logger.Warn("spool: ignoring unknown file in queue", "file", filepath.Join(s.queue, name))
		}
	}
	rep, err := s.log.recover(messages)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{s.tmp, s.queue, s.log.dir, s.dir, filepath.Dir(s.dir)} {
		if err := syncDir(d); err != nil {
			return nil, err
		}
	}
	s.log.retire()
	s.logger.Info("spool: opened", "dir", s.dir, "queued", len(messages)+rep.live-len(rep.moved),
		"in_log", rep.live-len(rep.moved), "log_segments", rep.segments,
		"removed_temporary", len(temps), "removed_orphan_state", orphans,
		"torn_records", rep.torn, "damaged_records", rep.damaged)
	return rep.moved, nil
}

func syncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: fsync %s: %w", name, err)
	}
	return nil
}

// commitLoop is the group committer. It takes every directory change that
// is waiting, applies them all, fsyncs the queue directory once and wakes
// the waiters. While it fsyncs, the next batch gathers in s.ops, so batches
// grow with load without any timer.
func (s *Spool) commitLoop() {
	defer close(s.done)
	batch := make([]dirOp, 0, maxBatch)
	errs := make([]error, 0, maxBatch)
	for op := range s.ops {
		batch = append(batch[:0], op)
	gather:
		for len(batch) < maxBatch {
			select {
			case op, ok := <-s.ops:
				if !ok {
					break gather
				}
				batch = append(batch, op)
			default:
				break gather
			}
		}
		errs = errs[:0]
		applied := false
		for _, op := range batch {
			err := op.apply()
			errs = append(errs, err)
			applied = applied || err == nil
		}
		if applied {
			err := s.timed(s.qdir.Sync)
			s.stats.dirSyncs.Add(1)
			if err != nil {
				err = fmt.Errorf("spool: fsync %s: %w", s.queue, err)
				s.logger.Error("spool: group commit failed", "err", err, "batch", len(batch))
				for i := range errs {
					if errs[i] == nil {
						errs[i] = err
					}
				}
			}
		}
		for i, op := range batch {
			op.done <- errs[i]
		}
		clear(batch) // drop the closures for the collector
	}
}

// commitDir runs apply in the committer and returns once its effect is
// durable, or with apply's or the fsync's error.
func (s *Spool) commitDir(apply func() error) error {
	done := make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	s.ops <- dirOp{apply: apply, done: done}
	s.mu.RUnlock()
	return <-done
}

// Close waits for pending commits, stops the committer and releases the
// directory. Writers still open can then only Abort.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	close(s.ops)
	close(s.log.ops)
	s.mu.Unlock()
	<-s.done
	<-s.log.stopped
	return errors.Join(s.qdir.Close(), s.log.close(), s.lock.Close())
}

func (s *Spool) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// Stats returns the counters since Open.
func (s *Spool) Stats() Stats {
	return Stats{
		Commits:   s.stats.commits.Load(),
		Updates:   s.stats.updates.Load(),
		Removes:   s.stats.removes.Load(),
		FileSyncs: s.stats.fileSyncs.Load(),
		DirSyncs:  s.stats.dirSyncs.Load(),
		LogSyncs:  s.stats.logSyncs.Load(),
		Retired:   s.stats.retired.Load(),
		Forwarded: s.stats.forwarded.Load(),
	}
}

func (s *Spool) messagePath(id string) string { return filepath.Join(s.queue, id) }
func (s *Spool) statePath(id string) string   { return filepath.Join(s.queue, id+stateSuffix) }

// Queued returns the IDs of all committed messages, oldest first.
func (s *Spool) Queued() ([]string, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	entries, err := os.ReadDir(s.queue)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if validID(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	ids = s.log.ids(ids)
	slices.Sort(ids)
	// A message being moved out of the log by Update is briefly in both.
	return slices.Compact(ids), nil
}

// Envelope returns the envelope of message id with its latest delivery
// state: the one last written by Update, or the one written by Commit.
func (s *Spool) Envelope(id string) (*Envelope, error) {
	if err := s.check(id); err != nil {
		return nil, err
	}
	if env, ok, err := s.log.envelope(id); ok {
		return env, err
	}
	f, env, _, err := s.openMessage(id)
	if err != nil {
		return nil, err
	}
	f.Close()
	sf, err := os.Open(s.statePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return env, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer sf.Close()
	st, rec, err := decodeFile(sf)
	if err != nil {
		return nil, fmt.Errorf("spool: state of %s: %w", id, err)
	}
	if rec.bodyLen != 0 || st.ID != id || st.Size != env.Size {
		return nil, fmt.Errorf("spool: state of %s: %w", id,
			corruptf("state file is for %s with size %d, message has size %d", st.ID, st.Size, env.Size))
	}
	return st, nil
}

// check returns the error for an operation on message id when the spool
// is closed or id cannot be an ID.
func (s *Spool) check(id string) error {
	if s.isClosed() {
		return ErrClosed
	}
	if !validID(id) {
		return fmt.Errorf("%w: %q", ErrBadID, id)
	}
	return nil
}

// openMessage opens and checks the message file of id.
func (s *Spool) openMessage(id string) (*os.File, *Envelope, record, error) {
	if err := s.check(id); err != nil {
		return nil, nil, record{}, err
	}
	f, err := os.Open(s.messagePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, nil, record{}, fmt.Errorf("spool: %w", err)
	}
	env, rec, err := decodeFile(f)
	if err == nil && (env.ID != id || env.Size != rec.bodyLen) {
		err = corruptf("envelope is for %s with size %d, file has %s with body %d", env.ID, env.Size, id, rec.bodyLen)
	}
	if err != nil {
		f.Close()
		return nil, nil, record{}, fmt.Errorf("spool: message %s: %w", id, err)
	}
	return f, env, rec, nil
}

func decodeFile(f *os.File) (*Envelope, record, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, record{}, err
	}
	return decodeRecord(f, fi.Size())
}

// Body opens the body of message id. The caller must Close it.
func (s *Spool) Body(id string) (*Body, error) {
	if err := s.check(id); err != nil {
		return nil, err
	}
	if b, ok, err := s.log.body(id); ok {
		return b, err
	}
	f, _, rec, err := s.openMessage(id)
	if err != nil {
		return nil, err
	}
	return newBody(f, id, 0, rec.bodyLen, rec.bodyCRC), nil
}

// Update durably replaces the delivery state of message env.ID with env:
// when it returns nil, Envelope returns env even after a crash. A crash
// during Update leaves the previous state. env.ID and env.Size must be
// those of the message. Updates of one message must not run concurrently
// with each other or with its Remove.
//
// A message in the log is moved out of it to a file of its own, with env
// as its envelope, and a done record for it is appended to the log: a
// message that needs a second attempt may wait for days, and it should
// not hold its segment on disk all that time. Every later Update writes
// the state file.
func (s *Spool) Update(env *Envelope) error {
	if err := s.check(env.ID); err != nil {
		return err
	}
	if ent, ok := s.log.lookup(env.ID); ok {
		return s.moveOut(env, ent)
	}
	f, msg, _, err := s.openMessage(env.ID)
	if err != nil {
		return err
	}
	f.Close()
	if env.Size != msg.Size {
		return fmt.Errorf("spool: update of %s changes its size from %d to %d", env.ID, msg.Size, env.Size)
	}
	envJSON, err := marshalEnvelope(env)
	if err != nil {
		return err
	}
	tmp, err := s.writeTemp("state-", appendTrailer(nil, 0, 0, envJSON))
	if err != nil {
		return err
	}
	id := env.ID
	err = s.commitDir(func() error {
		if _, err := os.Lstat(s.messagePath(id)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: %s", ErrNotFound, id)
			}
			return fmt.Errorf("spool: %w", err)
		}
		if err := os.Rename(tmp, s.statePath(id)); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		return nil
	})
	if err != nil {
		os.Remove(tmp) // gone already if the rename happened
		return err
	}
	s.stats.updates.Add(1)
	return nil
}

// writeTemp writes data to a new file in tmp/ and fsyncs it.
func (s *Spool) writeTemp(prefix string, data []byte) (name string, err error) {
	f, err := os.CreateTemp(s.tmp, prefix)
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	if err := s.syncFile(f); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	return f.Name(), nil
}

// Option changes how Open sets up a spool.
type Option func(*Spool)

// WithFsyncObserver has f told the duration of every fsync of a message
// file or of the queue directory (for the fsync latency metric).
func WithFsyncObserver(f func(time.Duration)) Option {
	return func(s *Spool) { s.onFsync = f }
}

// timed runs the fsync sync and tells the observer how long it took.
func (s *Spool) timed(sync func() error) error {
	if s.onFsync == nil {
		return sync()
	}
	start := time.Now()
	err := sync()
	s.onFsync(time.Since(start))
	return err
}

func (s *Spool) syncFile(f *os.File) error {
	s.stats.fileSyncs.Add(1)
	if err := s.timed(f.Sync); err != nil {
		return fmt.Errorf("spool: fsync %s: %w", f.Name(), err)
	}
	return nil
}

// Remove deletes message id and its state, durably. Removing a message
// that is not there returns an error wrapping ErrNotFound.
//
// The files are unlinked at once, in the caller, and only the directory
// fsync is left to the committer, whose next one starts after the unlinks
// and so covers them. From the unlink on, a restarted process no longer
// finds the message; had the committer done the unlinks, they would wait
// behind the fsync it may be in the middle of. For the deliver package
// that wait is part of the window in which a crash sends a relayed
// message twice.
//
// A message in the log is removed by a done record appended to it, durable
// once the log's group commit returns.
func (s *Spool) Remove(id string) error {
	if err := s.check(id); err != nil {
		return err
	}
	if _, ok := s.log.lookup(id); ok {
		if err := s.log.append(doneRecord(nil, id), id); err != nil {
			return err
		}
		s.stats.removes.Add(1)
		return nil
	}
	// The message goes first: a crash in between leaves an orphan state
	// file, which Open removes, rather than a message whose delivery state
	// has been lost and which would be delivered again to every recipient.
	if err := os.Remove(s.messagePath(id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return fmt.Errorf("spool: %w", err)
	}
	if err := os.Remove(s.statePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	if err := s.commitDir(func() error { return nil }); err != nil {
		return err
	}
	s.stats.removes.Add(1)
	return nil
}

// Quarantine moves a message that cannot be read (ErrCorrupt) and its
// state file out of the queue into <dir>/corrupt/, where an operator can
// look at it; the queue stops trying it. Nothing is deleted. A message in
// the log is copied there, its record as it is, as <ID>.rec, and then
// removed from the log.
func (s *Spool) Quarantine(id string) error {
	if err := s.check(id); err != nil {
		return err
	}
	dst := filepath.Join(s.dir, corruptDir)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if rec, _, ok, err := s.log.record(id); ok {
		if err != nil {
			return err
		}
		return s.quarantineRecord(id, rec, dst)
	}
	err := s.commitDir(func() error {
		if err := os.Rename(s.messagePath(id), filepath.Join(dst, id)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: %s", ErrNotFound, id)
			}
			return fmt.Errorf("spool: %w", err)
		}
		if err := os.Rename(s.statePath(id), filepath.Join(dst, id+stateSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spool: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The renames are durable in the queue; make the new entries so too.
	return syncDir(dst)
}

// NewID returns a fresh message ID of the spool's kind, for a message that
// is stored elsewhere (delivered straight into Maildir) but should be named
// the same way in logs.
func (s *Spool) NewID() string { return s.ids.next(time.Now()) }

// Writable reports whether a message can be written now: a file is made
// and removed in the spool's temporary directory (readiness checks).
func (s *Spool) Writable() error {
	if s.isClosed() {
		return ErrClosed
	}
	f, err := os.CreateTemp(s.tmp, "ready-")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// withSegmentSize makes the log start a new segment at size bytes instead
// of defaultSegmentSize: tests use it to make many segments.
func withSegmentSize(size int64) Option {
	return func(s *Spool) { s.log.segSize = size }
}

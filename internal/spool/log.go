package spool

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The log of small messages: segment files in <dir>/log/, appended to by
// one committer goroutine (see the package documentation).

const (
	logDir    = "log"
	segSuffix = ".seg"
	// logMax is the largest body that goes into the log: a body is held in
	// memory until Commit, and one longer than this is streamed to a file
	// of its own instead. Most mail is smaller (a plain-text message is a
	// few KiB), and holding 64 KiB per session writing DATA is what a
	// session's 32 KiB write buffer and the reader's buffers already cost.
	logMax = 64 << 10
	// defaultSegmentSize is the size at which the committer starts a new
	// segment. A segment is deleted only when no message in it is left,
	// so this is also the most disk one message that waits can hold up
	// until it is delivered or moved out (see Update); at 5,000 1 KiB
	// messages a second a new segment is started about once a second,
	// whose create and two fsyncs are nothing beside that many commits.
	defaultSegmentSize = 4 << 20
	// maxBatchBytes bounds the records of one group commit of the log, so
	// that a segment overshoots the size above by at most this much.
	maxBatchBytes = 1 << 20
	// maxRecBuf is the largest record buffer kept in the pool; larger
	// ones (an envelope with thousands of recipients) are left to the
	// collector.
	maxRecBuf = 2 * logMax
)

// segment is one segment file. live and tombs are guarded by msgLog.mu;
// size is the committer's alone.
type segment struct {
	seq  uint64
	path string
	// f is open on the active segment only, which the committer writes
	// and anyone holding mu may ReadAt. Other segments are opened for
	// each read: a backlog of many segments must not hold as many
	// descriptors (mxguard doctor counts on a fixed number).
	f    *os.File
	salt salt
	size int64 // bytes written and synced

	live int // message records here whose message has not left the log
	// tombs are the IDs of the done records here for messages in older
	// segments that still exist, by segment. While such a segment exists,
	// these done records must too, or its messages would come back at the
	// next start.
	tombs map[uint64][]string
}

// logEntry is where a queued message's record is.
type logEntry struct {
	seg     *segment
	off     int64 // of the record
	bodyLen int64
	bodyCRC uint32
	envLen  int64
	envCRC  uint32
}

func (e *logEntry) bodyOff() int64 { return e.off + recHeaderLen }
func (e *logEntry) envOff() int64  { return e.off + recHeaderLen + e.bodyLen }
func (e *logEntry) end() int64     { return e.envOff() + e.envLen }

// logOp is a record waiting for the committer.
type logOp struct {
	rec  []byte // finished but not sealed
	id   string
	off  int64 // where the committer put it
	done chan error
}

// msgLog is the log and its index of the messages in it.
type msgLog struct {
	s       *Spool
	dir     string
	dirF    *os.File // dir, kept open to fsync it
	segSize int64
	ops     chan *logOp
	stopped chan struct{} // closed when the committer has returned

	buf []byte // the committer's: a batch is written from it

	mu          sync.RWMutex
	retireCheck []*segment // segments that may have become deletable
	index       map[string]*logEntry
	segs        map[uint64]*segment
	active      *segment // appended to; nil until the first append, or after a failed write
	nextSeq     uint64
}

func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segSuffix) }

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// run is the log's group committer: it takes every record waiting, writes
// them to the active segment with one write, fdatasyncs it once and wakes
// the waiters. While it syncs, the next batch gathers.
func (l *msgLog) run() {
	defer close(l.stopped)
	batch := make([]*logOp, 0, maxBatch)
	for op := range l.ops {
		batch = append(batch[:0], op)
		size := len(op.rec)
	gather:
		for len(batch) < maxBatch && size < maxBatchBytes {
			select {
			case op, ok := <-l.ops:
				if !ok {
					break gather
				}
				batch = append(batch, op)
				size += len(op.rec)
			default:
				break gather
			}
		}
		_, err := l.write(batch)
		for _, op := range batch {
			op.done <- err
		}
		clear(batch)
		l.retire()
	}
	l.retire()
}

// write appends batch to the active segment, durably, applies it to the
// index and returns the segment.
func (l *msgLog) write(batch []*logOp) (*segment, error) {
	if l.active == nil || l.active.size >= l.segSize {
		if err := l.rotate(); err != nil {
			l.s.logger.Error("spool: cannot start a log segment", "err", err)
			return nil, err
		}
	}
	seg := l.active
	buf := l.buf[:0]
	for _, op := range batch {
		sealRecord(op.rec, seg.salt)
		op.off = seg.size + int64(len(buf))
		buf = append(buf, op.rec...)
	}
	if cap(buf) <= 2*maxBatchBytes {
		l.buf = buf
	}
	_, err := seg.f.WriteAt(buf, seg.size)
	if err == nil {
		l.s.stats.logSyncs.Add(1)
		err = l.s.timed(func() error { return fdatasync(seg.f) })
	}
	if err != nil {
		err = fmt.Errorf("spool: writing %s: %w", seg.path, err)
		l.s.logger.Error("spool: group commit of the log failed", "err", err, "batch", len(batch))
		// Every waiter gets the error and its client a temporary
		// failure, so take the records back (they would be delivered
		// at the next start otherwise, a second copy once the client
		// sends again) and go on in a fresh segment: after a failed
		// fsync, what the kernel holds of this one is not to be trusted.
		if terr := seg.f.Truncate(seg.size); terr != nil {
			l.s.logger.Error("spool: cannot take back failed records", "file", seg.path, "offset", seg.size, "err", terr)
		}
		l.mu.Lock()
		l.active = nil
		l.closeSegment(seg)
		l.retireCheck = append(l.retireCheck, seg)
		l.mu.Unlock()
		return nil, err
	}
	seg.size += int64(len(buf))
	l.mu.Lock()
	for _, op := range batch {
		l.apply(seg, op.rec[8], op.id, entryOf(seg, op.off, op.rec))
	}
	l.mu.Unlock()
	return seg, nil
}

// entryOf is the index entry of the sealed record rec at off in seg.
func entryOf(seg *segment, off int64, rec []byte) *logEntry {
	return &logEntry{
		seg:     seg,
		off:     off,
		bodyLen: int64(binary.LittleEndian.Uint32(rec[12:])),
		envLen:  int64(binary.LittleEndian.Uint32(rec[16:])),
		bodyCRC: binary.LittleEndian.Uint32(rec[20:]),
		envCRC:  binary.LittleEndian.Uint32(rec[24:]),
	}
}

// apply records in the index a record of kind for id, found in seg (the
// committer's, or recovery's as it reads the segments in order). l.mu
// must be held.
func (l *msgLog) apply(seg *segment, kind byte, id string, e *logEntry) {
	switch kind {
	case recordMessage:
		if old, ok := l.index[id]; ok {
			// Not written by this package (IDs are unique); the later
			// record stands, as it would at the next start.
			l.s.logger.Warn("spool: message recorded twice in the log; the later record stands", "id", id,
				"file", old.seg.path, "offset", old.off)
			l.drop(old)
		}
		l.index[id] = e
		seg.live++
	case recordDone:
		old, ok := l.index[id]
		if !ok {
			return // its message's segment is gone
		}
		delete(l.index, id)
		l.drop(old)
		if old.seg != seg {
			seg.tombs[old.seg.seq] = append(seg.tombs[old.seg.seq], id)
		}
	}
}

// drop takes e's message out of its segment's count. l.mu must be held.
func (l *msgLog) drop(e *logEntry) {
	e.seg.live--
	if e.seg.live == 0 {
		l.retireCheck = append(l.retireCheck, e.seg)
	}
}

// rotate starts a new segment and makes it the active one. The header is
// fsynced, and so is the directory, before any record goes in: a record
// acknowledged in a segment whose name is not durable would be lost.
func (l *msgLog) rotate() error {
	seq := l.nextSeq
	l.nextSeq++
	var sl salt
	rand.Read(sl[:]) // never fails, per its documentation
	path := filepath.Join(l.dir, segmentName(seq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	err = func() error {
		if _, err := f.Write(appendSegmentHeader(nil, seq, sl)); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if err := l.s.syncFile(f); err != nil {
			return err
		}
		return l.syncDir()
	}()
	if err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	seg := &segment{seq: seq, path: path, f: f, salt: sl, size: segHeaderLen, tombs: map[uint64][]string{}}
	l.mu.Lock()
	old := l.active
	l.segs[seq] = seg
	l.active = seg
	if old != nil {
		l.closeSegment(old)
		l.retireCheck = append(l.retireCheck, old)
	}
	l.mu.Unlock()
	return nil
}

func (l *msgLog) syncDir() error {
	l.s.stats.dirSyncs.Add(1)
	if err := l.s.timed(l.dirF.Sync); err != nil {
		return fmt.Errorf("spool: fsync %s: %w", l.dir, err)
	}
	return nil
}

// retire deletes the segments among those to check that no message is
// left in, but the active one. One that holds done records for messages in
// an older segment still there has them appended again, to the active
// segment, first: otherwise one message waiting in an old segment would
// hold every later segment on disk, each through the done records of the
// one before. Each deletion is durable before the next, oldest first.
func (l *msgLog) retire() {
	for {
		l.mu.Lock()
		var victim *segment
		for _, seg := range l.retireCheck {
			if l.segs[seg.seq] == seg && seg != l.active && seg.live == 0 && (victim == nil || seg.seq < victim.seq) {
				victim = seg
			}
		}
		if victim == nil {
			l.retireCheck = l.retireCheck[:0]
			l.mu.Unlock()
			return
		}
		l.retireCheck = slices.DeleteFunc(l.retireCheck, func(s *segment) bool { return s == victim })
		tombs := victim.tombs
		victim.tombs = map[uint64][]string{}
		l.mu.Unlock()

		if len(tombs) > 0 {
			if err := l.forward(tombs); err != nil {
				// The segment stays until the next start, which reads
				// it again; nothing is lost.
				l.s.logger.Error("spool: cannot carry done records forward; the log segment stays", "file", victim.path, "err", err)
				l.mu.Lock()
				victim.tombs = tombs
				l.mu.Unlock()
				return
			}
		}

		l.mu.Lock()
		delete(l.segs, victim.seq)
		l.closeSegment(victim)
		for _, seg := range l.segs {
			delete(seg.tombs, victim.seq)
		}
		l.mu.Unlock()
		err := os.Remove(victim.path)
		if err == nil {
			err = l.syncDir()
		}
		if err != nil {
			// The segment stays, and its messages with it, until the
			// next start reads it again: those are delivered twice, but
			// none is lost.
			l.s.logger.Error("spool: cannot delete delivered log segment", "file", victim.path, "err", err)
			return
		}
		l.s.stats.retired.Add(1)
	}
}

// forward appends again, durably, the done records tombs names (by the
// segment of their messages) and records them as held by the segment they
// went into.
func (l *msgLog) forward(tombs map[uint64][]string) error {
	var ops []*logOp
	for _, ids := range tombs {
		for _, id := range ids {
			ops = append(ops, &logOp{rec: doneRecord(nil, id), id: id})
		}
	}
	seg, err := l.write(ops)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for target, ids := range tombs {
		if _, ok := l.segs[target]; ok {
			seg.tombs[target] = append(seg.tombs[target], ids...)
		}
	}
	l.s.stats.forwarded.Add(int64(len(ops)))
	return nil
}

// append hands rec, a finished record for message id, to the committer
// and returns once it is durable.
func (l *msgLog) append(rec []byte, id string) error {
	op := &logOp{rec: rec, id: id, done: make(chan error, 1)}
	s := l.s
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	l.ops <- op
	s.mu.RUnlock()
	return <-op.done
}

// lookup returns a copy of the index entry of id.
func (l *msgLog) lookup(id string) (logEntry, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	e, ok := l.index[id]
	if !ok {
		return logEntry{}, false
	}
	return *e, true
}

// envelope reads the envelope of message id from the log; ok is false if
// the message is not there.
func (l *msgLog) envelope(id string) (env *Envelope, ok bool, err error) {
	l.mu.RLock()
	e, ok := l.index[id]
	if !ok {
		l.mu.RUnlock()
		return nil, false, nil
	}
	ent := *e
	buf := make([]byte, ent.envLen)
	err = l.readAt(ent.seg, buf, ent.envOff())
	l.mu.RUnlock()
	if errors.Is(err, io.EOF) {
		err = corruptf("the file ends inside the record")
	}
	if err == nil {
		if got := crc32.Checksum(buf, crcTable); got != ent.envCRC {
			err = corruptf("envelope checksum %08x, want %08x", got, ent.envCRC)
		}
	}
	if err == nil {
		env, err = unmarshalEnvelope(buf)
	}
	if err == nil && (env.ID != id || env.Size != ent.bodyLen) {
		err = corruptf("envelope is for %s with size %d, record has %s with body %d", env.ID, env.Size, id, ent.bodyLen)
	}
	if err != nil {
		return nil, true, fmt.Errorf("spool: message %s (%s at offset %d): %w", id, ent.seg.path, ent.off, err)
	}
	return env, true, nil
}

// record reads the whole record of message id (header, body, envelope)
// from the log; ok is false if the message is not there. Nothing is
// checked: this is for moving the record elsewhere as it is.
func (l *msgLog) record(id string) (rec []byte, ent logEntry, ok bool, err error) {
	l.mu.RLock()
	e, ok := l.index[id]
	if !ok {
		l.mu.RUnlock()
		return nil, logEntry{}, false, nil
	}
	ent = *e
	rec = make([]byte, ent.end()-ent.off)
	err = l.readAt(ent.seg, rec, ent.off)
	l.mu.RUnlock()
	if errors.Is(err, io.EOF) {
		err = corruptf("the file ends inside the record")
	}
	if err != nil {
		return nil, ent, true, fmt.Errorf("spool: message %s (%s at offset %d): %w", id, ent.seg.path, ent.off, err)
	}
	return rec, ent, true, nil
}

// body opens the body of message id in the log.
func (l *msgLog) body(id string) (*Body, bool, error) {
	l.mu.RLock()
	e, ok := l.index[id]
	if !ok {
		l.mu.RUnlock()
		return nil, false, nil
	}
	// Opened under the lock, so that the segment cannot be deleted in
	// between; once open, it stays readable after the message leaves.
	f, err := os.Open(e.seg.path)
	ent := *e
	l.mu.RUnlock()
	if err != nil {
		return nil, true, fmt.Errorf("spool: %w", err)
	}
	return newBody(f, id, ent.bodyOff(), ent.bodyLen, ent.bodyCRC), true, nil
}

// readAt reads len(p) bytes at off of seg, through its descriptor if it
// is the active segment, else by opening it. l.mu must be held (for
// reading): the segment then cannot be deleted or closed meanwhile.
func (l *msgLog) readAt(seg *segment, p []byte, off int64) error {
	f := seg.f
	if f == nil {
		var err error
		if f, err = os.Open(seg.path); err != nil {
			return err
		}
		defer f.Close()
	}
	_, err := f.ReadAt(p, off)
	return err
}

// closeSegment closes seg's descriptor, if it has one. l.mu must be held.
func (l *msgLog) closeSegment(seg *segment) {
	if seg.f != nil {
		seg.f.Close()
		seg.f = nil
	}
}

// forget takes id out of the index without a done record: its message has
// been moved to a file of its own (see Spool.Update) and the done record
// could not be written. At the next start the file wins over the record.
func (l *msgLog) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.index[id]; ok {
		delete(l.index, id)
		l.drop(e)
	}
}

// ids appends the IDs of the messages in the log to dst.
func (l *msgLog) ids(dst []string) []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for id := range l.index {
		dst = append(dst, id)
	}
	return dst
}

// close releases the segments. The committer must have returned.
func (l *msgLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, seg := range l.segs {
		if seg.f != nil {
			errs = append(errs, seg.f.Close())
		}
	}
	l.segs = nil
	return errors.Join(append(errs, l.dirF.Close())...)
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// moveOut makes message env.ID, now in the log at ent, a file of its own
// with env as its envelope, then appends a done record for it to the log.
// The file is durable before the done record is written: a crash in
// between leaves the message in both, and Open keeps the file.
func (s *Spool) moveOut(env *Envelope, ent logEntry) error {
	id := env.ID
	if env.Size != ent.bodyLen {
		return fmt.Errorf("spool: update of %s changes its size from %d to %d", id, ent.bodyLen, env.Size)
	}
	envJSON, err := marshalEnvelope(env)
	if err != nil {
		return err
	}
	rec, ent, ok, err := s.log.record(id)
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return err
	}
	// The body is copied with the checksum it was committed with, not one
	// of the bytes read now: damage stays detectable in the file.
	body := rec[recHeaderLen : recHeaderLen+ent.bodyLen : recHeaderLen+ent.bodyLen]
	tmp, err := s.writeTemp("msg-", appendTrailer(body, ent.bodyLen, ent.bodyCRC, envJSON))
	if err != nil {
		return err
	}
	dst := s.messagePath(id)
	renamed := false
	err = s.commitDir(func() error {
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		renamed = true
		return nil
	})
	if err != nil {
		if renamed {
			// Its durability is unknown: the log keeps the message, with
			// its previous state, as a failed Update promises.
			os.Remove(dst)
		} else {
			os.Remove(tmp)
		}
		return err
	}
	if err := s.log.append(doneRecord(nil, id), id); err != nil {
		// The update is durable in the file; the record in the log is
		// only stale. It is dropped from the index now and at the next
		// start, where the file wins over it.
		s.logger.Error("spool: message moved out of the log, its old record stays until the next start", "id", id, "err", err)
		s.log.forget(id)
	}
	s.stats.updates.Add(1)
	return nil
}

// quarantineRecord writes rec, the record of message id as read from the
// log, to <dst>/<id>.rec, durably, then removes the message from the log.
func (s *Spool) quarantineRecord(id string, rec []byte, dst string) error {
	tmp, err := s.writeTemp("corrupt-", rec)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dst, id+".rec")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: %w", err)
	}
	if err := syncDir(dst); err != nil {
		return err
	}
	return s.log.append(doneRecord(nil, id), id)
}

// recoveryReport is what reading the log at Open found.
type recoveryReport struct {
	segments int      // segment files read
	live     int      // messages in them
	moved    []string // of those, the ones that are also files of their own
	torn     int      // incomplete records at the ends of segments, dropped
	damaged  int      // stretches of damaged bytes skipped
}

// recover reads every segment in order and rebuilds the index: each
// message record adds a message, each done record takes one away. files
// are the messages in files of their own. It is run by Open, before the
// committer starts.
//
// What a crash leaves is handled quietly: a segment shorter than its
// header (the crash came while it was being started, before anything was
// written to it) is deleted, and an incomplete record at the end of a
// segment (the crash came while it was being written, before its fsync
// returned, so no client was told it was accepted) is dropped, with a
// warning. Anything else is damage and logged as an error naming the file
// and the offset: a segment whose header is unreadable is moved to
// corrupt/ whole; damaged records are skipped to the next good one, and the
// segment is also linked into corrupt/ for the operator.
func (l *msgLog) recover(files map[string]bool) (recoveryReport, error) {
	var rep recoveryReport
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return rep, fmt.Errorf("spool: %w", err)
	}
	var seqs []uint64
	for _, e := range entries {
		seq, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			l.s.logger.Warn("spool: ignoring unknown file in log", "file", filepath.Join(l.dir, e.Name()))
			continue
		}
		seqs = append(seqs, seq)
		l.nextSeq = max(l.nextSeq, seq+1)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		if err := l.recoverSegment(seq, &rep); err != nil {
			return rep, err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	rep.live = len(l.index)
	for id := range l.index {
		if files[id] {
			rep.moved = append(rep.moved, id)
		}
	}
	slices.Sort(rep.moved)
	for _, seg := range l.segs {
		l.retireCheck = append(l.retireCheck, seg)
	}
	return rep, nil
}

func (l *msgLog) recoverSegment(seq uint64, rep *recoveryReport) error {
	path := filepath.Join(l.dir, segmentName(seq))
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("spool: %w", err)
	}
	sc, err := newSegmentScanner(f, fi.Size())
	if err == nil && sc.seq != seq {
		err = corruptf("segment header says segment %d", sc.seq)
	}
	if err != nil {
		f.Close()
		if !errors.Is(err, ErrCorrupt) {
			return fmt.Errorf("spool: %s: %w", path, err)
		}
		if fi.Size() <= segHeaderLen {
			// Started at the crash, never written to: it holds no record.
			l.s.logger.Info("spool: removing log segment left unfinished by a crash", "file", path, "size", fi.Size())
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			return nil
		}
		to := filepath.Join(l.s.dir, corruptDir, segmentName(seq))
		l.s.logger.Error("spool: log segment unreadable, moved aside; the messages in it are not delivered",
			"file", path, "offset", 0, "to", to, "err", err)
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if err := os.Rename(path, to); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		return nil
	}
	// Segments are never appended to after a restart: like every segment
	// but the active one, this one is opened again for each read.
	defer f.Close()
	seg := &segment{seq: seq, path: path, salt: sc.salt, size: fi.Size(), tombs: map[uint64][]string{}}
	l.segs[seq] = seg
	rep.segments++
	linked := false
	for {
		rec, err := sc.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var d *scanDamage
		if errors.As(err, &d) {
			if d.Torn {
				rep.torn++
				l.s.logger.Warn("spool: dropped incomplete record at the end of a log segment (a crash during its write, never acknowledged)",
					"file", path, "offset", d.Off, "bytes", d.Len, "err", d.Why)
				continue
			}
			rep.damaged++
			l.s.logger.Error("spool: damaged log segment: bytes skipped, any message in them is lost",
				"file", path, "offset", d.Off, "bytes", d.Len, "err", d.Why)
			if !linked {
				linked = true
				l.preserve(path, seq)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("spool: %s: %w", path, err)
		}
		e := &logEntry{seg: seg, off: rec.off, bodyLen: rec.bodyLen, bodyCRC: rec.bodyCRC, envLen: rec.envLen, envCRC: rec.envCRC}
		l.mu.Lock()
		l.apply(seg, rec.kind, rec.id, e)
		l.mu.Unlock()
	}
}

// preserve links a damaged segment into corrupt/, so that the operator
// can look at it after the segment itself is deleted.
func (l *msgLog) preserve(path string, seq uint64) {
	to := filepath.Join(l.s.dir, corruptDir, segmentName(seq))
	err := os.MkdirAll(filepath.Dir(to), 0o700)
	if err == nil {
		err = os.Link(path, to)
	}
	if err == nil || errors.Is(err, fs.ErrExist) {
		l.s.logger.Info("spool: damaged log segment kept for inspection", "file", path, "copy", to)
		return
	}
	l.s.logger.Error("spool: cannot keep damaged log segment for inspection", "file", path, "err", err)
}

package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logSpool opens a spool in dir with segments of segSize bytes and
// returns it with the log it writes (Warn and above).
func logSpool(t *testing.T, dir string, segSize int64) (*Spool, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := Open(dir, logger, withSegmentSize(segSize))
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// segments lists the segment files in dir's log, by name.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, logDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func queuedIDs(t *testing.T, s *Spool) []string {
	t.Helper()
	ids, err := s.Queued()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func smallBody(i int) []byte {
	return fmt.Appendf(nil, "Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 300))
}

// TestLogSizes: a body of up to logMax bytes goes into the log, a longer
// one into a file of its own, and both read back the same.
func TestLogSizes(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	for _, tt := range []struct {
		size   int
		inFile bool
	}{{0, false}, {1, false}, {logMax, false}, {logMax + 1, true}, {3 * logMax, true}} {
		body := pseudoRandom(tt.size, byte(tt.size))
		w, err := s.Create(testEnvelope("a@x", "b@y"))
		if err != nil {
			t.Fatal(err)
		}
		for rest := body; len(rest) > 0; { // in DATA-sized pieces
			n := min(len(rest), 1000)
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		id, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		_, inLog := s.log.lookup(id)
		_, statErr := os.Stat(s.messagePath(id))
		if inLog == tt.inFile || (statErr == nil) != tt.inFile {
			t.Errorf("%d bytes: in the log %v, file: %v; want in a file: %v", tt.size, inLog, statErr, tt.inFile)
		}
		if got := readBody(t, s, id); !bytes.Equal(got, body) {
			t.Errorf("%d bytes: read back %d bytes that differ", tt.size, len(got))
		}
	}
}

// TestCommitWaitsForFsync: Commit of a message in the log returns only
// once the fdatasync covering its record has returned. The fsync observer,
// which the committer calls after each fsync, is held; Commit must wait
// for it.
func TestCommitWaitsForFsync(t *testing.T) {
	hold := make(chan struct{})
	synced := make(chan struct{}, 100)
	var held sync.Once
	s, err := Open(t.TempDir(), nil, WithFsyncObserver(func(time.Duration) {
		synced <- struct{}{}
		held.Do(func() { <-hold }) // the first is the new segment's header
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		_, err := commitErr(s, testEnvelope("a@x", "b@y"), []byte("hi\r\n"))
		done <- err
	}()
	<-synced
	select {
	case err := <-done:
		t.Fatalf("Commit returned (%v) while its fsync had not", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(hold)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Commit did not return after its fsync")
	}
	if st := s.Stats(); st.LogSyncs != 1 {
		t.Errorf("%d log fsyncs, want 1", st.LogSyncs)
	}
}

func commitErr(s *Spool, env *Envelope, body []byte) (string, error) {
	w, err := s.Create(env)
	if err != nil {
		return "", err
	}
	defer w.Abort()
	if _, err := w.Write(body); err != nil {
		return "", err
	}
	return w.Commit()
}

// TestLogRestart: messages in the log, some removed and one moved out by
// Update, are all where they should be after a restart, and a removed one
// never comes back.
func TestLogRestart(t *testing.T) {
	dir := t.TempDir()
	s, _ := logSpool(t, dir, 4<<10) // a few messages a segment
	var ids []string
	for i := range 30 {
		ids = append(ids, commit(t, s, testEnvelope("a@x", "b@y", "c@y"), smallBody(i)))
	}
	for i := 0; i < 30; i += 3 {
		if err := s.Remove(ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	env, err := s.Envelope(ids[4])
	if err != nil {
		t.Fatal(err)
	}
	env.Attempts = 2
	env.Rcpts[0] = Rcpt{Addr: "b@y", Done: true, Status: "250 ok"}
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	if _, inLog := s.log.lookup(ids[4]); inLog {
		t.Error("updated message still in the log")
	}
	if _, err := os.Stat(s.messagePath(ids[4])); err != nil {
		t.Errorf("updated message not in a file of its own: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for round := range 2 { // the second start reads what the first left
		s, _ = logSpool(t, dir, 4<<10)
		var want []string
		for i, id := range ids {
			if i%3 != 0 {
				want = append(want, id)
			}
		}
		if got := queuedIDs(t, s); !slices.Equal(got, want) {
			t.Fatalf("round %d: Queued = %v, want %v", round, got, want)
		}
		for i, id := range want {
			_ = i
			e, err := s.Envelope(id)
			if err != nil {
				t.Fatal(err)
			}
			if id == ids[4] {
				if !envEqual(e, env) {
					t.Errorf("round %d: updated envelope %+v, want %+v", round, e, env)
				}
				continue
			}
			if e.Attempts != 0 || len(e.Rcpts) != 2 {
				t.Errorf("round %d: envelope of %s: %+v", round, id, e)
			}
		}
		for i, id := range ids {
			if i%3 != 0 {
				if got := readBody(t, s, id); !bytes.Equal(got, smallBody(i)) {
					t.Errorf("round %d: body of %s: %q", round, id, got)
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLogRetire: segments go once every message in them is gone, and not
// before; a segment holding the done record of a message in an older,
// still present segment waits for that one, or the message would come back
// at the next start.
func TestLogRetire(t *testing.T) {
	dir := t.TempDir()
	s, _ := logSpool(t, dir, 2<<10)
	keep := commit(t, s, testEnvelope("a@x", "b@y"), smallBody(0))
	early := commit(t, s, testEnvelope("a@x", "b@y"), smallBody(1)) // in keep's segment
	var later []string
	for i := range 20 {
		later = append(later, commit(t, s, testEnvelope("a@x", "b@y"), smallBody(2+i)))
	}
	first := segments(t, dir)
	if len(first) < 5 {
		t.Fatalf("only %d segments: %v", len(first), first)
	}
	// Remove everything but keep, early last: its done record goes into a
	// new segment, which must outlive keep's.
	for _, id := range later {
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 { // fill segments past early's done record
		if err := s.Remove(commit(t, s, testEnvelope("a@x", "b@y"), smallBody(99))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(early); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := s.Remove(commit(t, s, testEnvelope("a@x", "b@y"), smallBody(98))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	left := segments(t, dir)
	if st := s.Stats(); st.Retired == 0 || len(left) > 4 {
		t.Errorf("%d segments retired, %d left: %v", st.Retired, len(left), left)
	}
	if left[0] != first[0] {
		t.Errorf("the segment of the message still queued is gone: %v, was %v", left, first)
	}

	s, _ = logSpool(t, dir, 2<<10)
	if got := queuedIDs(t, s); !slices.Equal(got, []string{keep}) {
		t.Fatalf("after restart Queued = %v, want only %s", got, keep)
	}
	if err := s.Remove(keep); err != nil {
		t.Fatal(err)
	}
	// One more message, so that the segment keep's removal went into is
	// no longer the one appended to.
	if err := s.Remove(commit(t, s, testEnvelope("a@x", "b@y"), bytes.Repeat([]byte("z"), 3<<10))); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left := segments(t, dir); len(left) != 1 {
		t.Errorf("with nothing queued %d segments are left: %v", len(left), left)
	}
	s, _ = logSpool(t, dir, 2<<10)
	if got := queuedIDs(t, s); len(got) != 0 {
		t.Errorf("after the second restart Queued = %v", got)
	}
}

// lastSegment is the path of the newest segment in dir.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs := segments(t, dir)
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	return filepath.Join(dir, logDir, segs[len(segs)-1])
}

// TestLogTornTail: a crash in the middle of a write leaves the start of a
// record at the end of the segment. The next start drops it with a
// warning naming the file and offset, and keeps everything before it.
func TestLogTornTail(t *testing.T) {
	dir := t.TempDir()
	s, _ := logSpool(t, dir, defaultSegmentSize)
	a := commit(t, s, testEnvelope("a@x", "b@y"), smallBody(1))
	b := commit(t, s, testEnvelope("a@x", "b@y"), smallBody(2))
	ent, _ := s.log.lookup(b)
	s.Close()
	seg := lastSegment(t, dir)
	for _, cut := range []int64{ent.end() - 1, ent.off + 40, ent.off + 3} {
		truncate(t, seg, cut)
		s, logs := logSpool(t, dir, defaultSegmentSize)
		if got := queuedIDs(t, s); !slices.Equal(got, []string{a}) {
			t.Errorf("cut at %d: Queued = %v, want %v", cut, got, []string{a})
		}
		want := fmt.Sprintf("dropped incomplete record at the end of a log segment (a crash during its write, never acknowledged)\" file=%s offset=%d bytes=%d", seg, ent.off, cut-ent.off)
		if !strings.Contains(logs.String(), want) {
			t.Errorf("cut at %d: log\n%s\nlacks %q", cut, logs, want)
		}
		s.Close()
	}
}

// TestLogDamaged: a damaged record in the middle of a segment is skipped;
// the records after it are still read; the error names the file and the
// offset, and the segment is kept in corrupt/.
func TestLogDamaged(t *testing.T) {
	dir := t.TempDir()
	s, _ := logSpool(t, dir, defaultSegmentSize)
	var ids []string
	for i := range 3 {
		ids = append(ids, commit(t, s, testEnvelope("a@x", "b@y"), smallBody(i)))
	}
	ent, _ := s.log.lookup(ids[1])
	s.Close()
	seg := lastSegment(t, dir)
	flip(t, seg, ent.bodyOff()+10)

	s, logs := logSpool(t, dir, defaultSegmentSize)
	if got, want := queuedIDs(t, s), []string{ids[0], ids[2]}; !slices.Equal(got, want) {
		t.Errorf("Queued = %v, want %v", got, want)
	}
	want := fmt.Sprintf("level=ERROR msg=\"spool: damaged log segment: bytes skipped, any message in them is lost\" file=%s offset=%d bytes=%d", seg, ent.off, ent.end()-ent.off)
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log\n%s\nlacks %q", logs, want)
	}
	if _, err := os.Stat(filepath.Join(dir, corruptDir, filepath.Base(seg))); err != nil {
		t.Errorf("damaged segment not kept in corrupt/: %v", err)
	}
	if got := readBody(t, s, ids[2]); !bytes.Equal(got, smallBody(2)) {
		t.Errorf("body after the damage: %q", got)
	}
}

// TestLogUnreadableSegment: a segment whose header is damaged cannot be
// read at all: it is moved to corrupt/ with an error, and the spool opens.
// A segment too short to hold a record is what a crash while starting one
// leaves; it is removed quietly.
func TestLogUnreadableSegment(t *testing.T) {
	dir := t.TempDir()
	s, _ := logSpool(t, dir, defaultSegmentSize)
	commit(t, s, testEnvelope("a@x", "b@y"), smallBody(1))
	s.Close()
	seg := lastSegment(t, dir)
	flip(t, seg, 3)
	unfinished := filepath.Join(dir, logDir, segmentName(1000))
	if err := os.WriteFile(unfinished, make([]byte, segHeaderLen), 0o600); err != nil {
		t.Fatal(err)
	}

	s, logs := logSpool(t, dir, defaultSegmentSize)
	if got := queuedIDs(t, s); len(got) != 0 {
		t.Errorf("Queued = %v", got)
	}
	want := fmt.Sprintf("level=ERROR msg=\"spool: log segment unreadable, moved aside; the messages in it are not delivered\" file=%s offset=0", seg)
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log\n%s\nlacks %q", logs, want)
	}
	if _, err := os.Stat(filepath.Join(dir, corruptDir, filepath.Base(seg))); err != nil {
		t.Errorf("unreadable segment not in corrupt/: %v", err)
	}
	if _, err := os.Stat(unfinished); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unfinished segment: %v, want it removed", err)
	}
	// New segments are numbered past every one seen.
	id := commit(t, s, testEnvelope("a@x", "b@y"), smallBody(2))
	if ent, _ := s.log.lookup(id); ent.seg.seq <= 1000 {
		t.Errorf("new segment numbered %d", ent.seg.seq)
	}
}

// TestLogMoveOutCrash: a crash after Update made a message a file but
// before its done record reached the log leaves the message in both. The
// file is the newer, and wins; the next start writes the done record, so
// the old copy never comes back, not even after the file is removed.
func TestLogMoveOutCrash(t *testing.T) {
	dir := t.TempDir()
	s, _ := logSpool(t, dir, defaultSegmentSize)
	id := commit(t, s, testEnvelope("a@x", "b@y", "c@y"), smallBody(1))
	seg := lastSegment(t, dir)
	before, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	env, err := s.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	env.Attempts = 1
	env.Rcpts[0].Done = true
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.WriteFile(seg, before, 0o600); err != nil { // the done record never made it
		t.Fatal(err)
	}

	s, _ = logSpool(t, dir, defaultSegmentSize)
	if got := queuedIDs(t, s); !slices.Equal(got, []string{id}) {
		t.Fatalf("Queued = %v, want %s once", got, id)
	}
	if e, err := s.Envelope(id); err != nil || !envEqual(e, env) {
		t.Errorf("Envelope = %+v, %v; want the updated one %+v", e, err, env)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, _ = logSpool(t, dir, defaultSegmentSize)
	if got := queuedIDs(t, s); len(got) != 0 {
		t.Errorf("after Remove and a restart Queued = %v", got)
	}
}

// TestLogCorruptAtRuntime: damage to a record after it was read at start
// is found when the message is read: the envelope by its checksum (and
// the queue then quarantines it), the body by the checksum Read checks.
func TestLogCorruptAtRuntime(t *testing.T) {
	s, _ := logSpool(t, t.TempDir(), defaultSegmentSize)
	envDamaged := commit(t, s, testEnvelope("a@x", "b@y"), smallBody(1))
	bodyDamaged := commit(t, s, testEnvelope("a@x", "b@y"), smallBody(2))
	for id, at := range map[string]func(logEntry) int64{
		envDamaged:  func(e logEntry) int64 { return e.envOff() + 3 },
		bodyDamaged: func(e logEntry) int64 { return e.bodyOff() + 3 },
	} {
		ent, _ := s.log.lookup(id)
		flip(t, ent.seg.path, at(ent))
	}
	_, err := s.Envelope(envDamaged)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "at offset") {
		t.Errorf("Envelope of a damaged record: %v, want ErrCorrupt naming the offset", err)
	}
	b, err := s.Body(bodyDamaged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a damaged body: %v, want ErrCorrupt", err)
	}
	b.Close()

	if err := s.Quarantine(envDamaged); err != nil {
		t.Fatal(err)
	}
	if got := queuedIDs(t, s); !slices.Equal(got, []string{bodyDamaged}) {
		t.Errorf("Queued after Quarantine = %v", got)
	}
	if data, err := os.ReadFile(filepath.Join(s.dir, corruptDir, envDamaged+".rec")); err != nil || !bytes.Contains(data, smallBody(1)) {
		t.Errorf("quarantined record: %v, %d bytes", err, len(data))
	}
}

// TestLogDescriptors: only the segment appended to is held open; the
// others, however many a backlog makes, are opened for each read, so that
// the descriptors the spool holds do not grow with the queue.
func TestLogDescriptors(t *testing.T) {
	dir := t.TempDir()
	s, _ := logSpool(t, dir, 2<<10)
	var ids []string
	for i := range 50 {
		ids = append(ids, commit(t, s, testEnvelope("a@x", "b@y"), smallBody(i)))
	}
	if n := len(segments(t, dir)); n < 10 {
		t.Fatalf("only %d segments", n)
	}
	for i, id := range ids { // every message still readable
		if _, err := s.Envelope(id); err != nil {
			t.Fatal(err)
		}
		if got := readBody(t, s, id); !bytes.Equal(got, smallBody(i)) {
			t.Fatalf("body of %s: %q", id, got)
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	open := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, filepath.Join(dir, logDir)+"/") {
			open++
		}
	}
	if open > 1 {
		t.Errorf("%d segment files held open, want only the active one", open)
	}
}

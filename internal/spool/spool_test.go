package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// openSpool opens a spool in dir (a new temporary directory if dir is "")
// and closes it when the test ends, unless the test closed it already.
func openSpool(t testing.TB, dir string) *Spool {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Open(dir, logger)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testEnvelope(from string, rcpts ...string) *Envelope {
	env := &Envelope{From: from, ClientIP: "127.0.0.1", Helo: "client.example"}
	for _, r := range rcpts {
		env.Rcpts = append(env.Rcpts, Rcpt{Addr: r})
	}
	return env
}

// commit stores a message and returns its ID.
func commit(t testing.TB, s *Spool, env *Envelope, body []byte) string {
	t.Helper()
	w, err := s.Create(env)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer w.Abort()
	if _, err := w.Write(body); err != nil {
		t.Fatalf("Write: %v", err)
	}
	id, err := w.Commit()
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return id
}

func readBody(t testing.TB, s *Spool, id string) []byte {
	t.Helper()
	b, err := s.Body(id)
	if err != nil {
		t.Fatalf("Body(%s): %v", id, err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatalf("reading body of %s: %v", id, err)
	}
	return data
}

func pseudoRandom(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	s := openSpool(t, "")
	tests := []struct {
		name string
		env  *Envelope
		body []byte
	}{
		{"empty body", testEnvelope("a@example.org", "b@example.com"), nil},
		{"one line", testEnvelope("", "postmaster@example.com"), []byte("Subject: hi\r\n\r\nhello\r\n")},
		{"utf8", &Envelope{From: "jöran@bücher.example", Rcpts: []Rcpt{{Addr: "δοκιμή@παράδειγμα.δοκιμή"}}, SMTPUTF8: true}, []byte("x\r\n")},
		{"many rcpts", testEnvelope("a@example.org", "1@x", "2@x", "3@x", "4@x"), bytes.Repeat([]byte("line\r\n"), 1000)},
		{"binary 300 KiB", testEnvelope("a@example.org", "b@example.com"), pseudoRandom(300<<10, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			id := commit(t, s, tt.env, tt.body)
			if tt.env.ID != id || tt.env.Size != int64(len(tt.body)) || tt.env.Received.Before(before) {
				t.Errorf("after Commit env has ID %q Size %d Received %v; want %q, %d, after %v",
					tt.env.ID, tt.env.Size, tt.env.Received, id, len(tt.body), before)
			}
			got, err := s.Envelope(id)
			if err != nil {
				t.Fatalf("Envelope: %v", err)
			}
			if !envEqual(got, tt.env) {
				t.Errorf("Envelope = %+v, want %+v", got, tt.env)
			}
			if data := readBody(t, s, id); !bytes.Equal(data, tt.body) {
				t.Errorf("body: got %d bytes, want %d", len(data), len(tt.body))
			}

			// The delivery side reads bodies several times.
			b, err := s.Body(id)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Size() != int64(len(tt.body)) {
				t.Errorf("Size = %d, want %d", b.Size(), len(tt.body))
			}
			for range 2 {
				if _, err := b.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				if data, err := io.ReadAll(b); err != nil || !bytes.Equal(data, tt.body) {
					t.Errorf("reread: %d bytes, %v", len(data), err)
				}
			}
			if len(tt.body) > 10 {
				p := make([]byte, 5)
				if _, err := b.ReadAt(p, 5); err != nil || !bytes.Equal(p, tt.body[5:10]) {
					t.Errorf("ReadAt(5) = %q, %v; want %q", p, err, tt.body[5:10])
				}
			}
		})
	}
}

// envEqual compares envelopes the way they survive encoding: times by
// instant, not by location or monotonic reading.
func envEqual(a, b *Envelope) bool {
	x, y := *a, *b
	if !x.Received.Equal(y.Received) || !x.NextTry.Equal(y.NextTry) {
		return false
	}
	x.Received, y.Received, x.NextTry, y.NextTry = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

// TestEnvelopeRoundTripAllFields fills every field of Envelope and Rcpt and
// checks that the disk format keeps it: a field added to Envelope but not to
// diskEnvelope makes it fail.
func TestEnvelopeRoundTripAllFields(t *testing.T) {
	var env Envelope
	fill(t, reflect.ValueOf(&env).Elem())
	env.ID = idEncoding.EncodeToString(make([]byte, 15))
	data, err := marshalEnvelope(&env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := unmarshalEnvelope(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, env) {
		t.Errorf("round trip lost data:\n got %+v\nwant %+v\n(json %s)", *got, env, data)
	}
}

func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch {
		case f.Type() == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(time.Unix(1700000000+int64(i), int64(i)).UTC()))
		case f.Kind() == reflect.String:
			f.SetString("value of " + name)
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.CanInt():
			f.SetInt(int64(i + 1))
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			f.Set(reflect.MakeSlice(f.Type(), 2, 2))
			for j := range 2 {
				fill(t, f.Index(j))
			}
		default:
			t.Fatalf("fill: no case for field %s of type %s; add one", name, f.Type())
		}
	}
}

func TestConcurrentCommits(t *testing.T) {
	s := openSpool(t, "")
	const goroutines, each = 40, 10
	var (
		mu   sync.Mutex
		want = map[string][]byte{}
		wg   sync.WaitGroup
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				body := fmt.Appendf(nil, "goroutine %d message %d\r\n", g, i)
				w, err := s.Create(testEnvelope("a@x", "b@y"))
				if err != nil {
					t.Error(err)
					return
				}
				w.Write(body)
				id, err := w.Commit()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if _, dup := want[id]; dup {
					t.Errorf("duplicate ID %s", id)
				}
				want[id] = body
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	ids, err := s.Queued()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != goroutines*each || !slices.IsSorted(ids) {
		t.Fatalf("Queued: %d IDs (sorted: %v), want %d sorted", len(ids), slices.IsSorted(ids), goroutines*each)
	}
	for _, id := range ids {
		if got := readBody(t, s, id); !bytes.Equal(got, want[id]) {
			t.Errorf("%s: body %q, want %q", id, got, want[id])
		}
	}
	// Small messages share the log's fdatasyncs; the one segment costs a
	// file and a directory fsync.
	st := s.Stats()
	if st.Commits != goroutines*each || st.FileSyncs != 1 || st.DirSyncs != 1 || st.LogSyncs >= st.Commits {
		t.Errorf("Stats = %+v: want %d commits, one segment started, fewer log fsyncs (group commit)", st, goroutines*each)
	}
	t.Logf("%d commits, %d log fsyncs", st.Commits, st.LogSyncs)
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	var ids []string
	for i := range 5 {
		ids = append(ids, commit(t, s, testEnvelope("a@x", "b@y", "c@y"), fmt.Appendf(nil, "body %d", i)))
	}
	env, err := s.Envelope(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	env.Attempts = 3
	env.Rcpts[0].Done = true
	env.Rcpts[0].Status = "250 2.0.0 ok"
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ids[3]); err != nil {
		t.Fatal(err)
	}
	// A writer in progress at the crash.
	w, err := s.Create(testEnvelope("a@x", "b@y"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half a message"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What else a crash can leave: an unfinished state rewrite and the
	// state file of a half-done Remove.
	orphan := filepath.Join(dir, queueDir, ids[3]+stateSuffix)
	for _, name := range []string{filepath.Join(dir, tmpDir, "state-123"), orphan} {
		if err := os.WriteFile(name, []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	s = openSpool(t, dir)
	got, err := s.Queued()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{ids[0], ids[1], ids[2], ids[4]}; !slices.Equal(got, want) {
		t.Errorf("Queued after restart = %v, want %v", got, want)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(left) != 0 {
		t.Errorf("tmp/ not cleaned: %v", left)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan state file: %v, want it removed", err)
	}
	if e, err := s.Envelope(ids[1]); err != nil || !envEqual(e, env) {
		t.Errorf("updated envelope after restart = %+v, %v; want %+v", e, err, env)
	}
	if b := readBody(t, s, ids[4]); string(b) != "body 4" {
		t.Errorf("body after restart = %q", b)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort of a writer whose file Open removed: %v", err)
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	tmpEmpty := func() {
		t.Helper()
		if left, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(left) != 0 {
			t.Errorf("tmp/ holds %v", left)
		}
	}

	t.Run("plain", func(t *testing.T) {
		w, err := s.Create(testEnvelope("a@x", "b@y"))
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("data"))
		for range 2 {
			if err := w.Abort(); err != nil {
				t.Errorf("Abort: %v", err)
			}
		}
		if _, err := w.Commit(); err == nil {
			t.Error("Commit after Abort succeeded")
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Error("Write after Abort succeeded")
		}
		tmpEmpty()
	})
	t.Run("after failed write", func(t *testing.T) {
		w, err := s.Create(testEnvelope("a@x", "b@y"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, logMax+1)); err != nil || w.f == nil {
			t.Fatalf("a body past logMax is not in a file: %v", err)
		}
		w.f.Close() // the disk goes away
		if _, err := w.Write(make([]byte, 2*writeBuffer)); err == nil {
			t.Fatal("Write to a closed file succeeded")
		}
		if _, err := w.Commit(); err == nil {
			t.Error("Commit after failed Write succeeded")
		}
		if err := w.Abort(); err != nil {
			t.Errorf("Abort: %v", err)
		}
		tmpEmpty()
	})
	t.Run("after commit", func(t *testing.T) {
		w, err := s.Create(testEnvelope("a@x", "b@y"))
		if err != nil {
			t.Fatal(err)
		}
		id, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Abort(); err != nil {
			t.Errorf("Abort after Commit: %v", err)
		}
		if _, err := s.Envelope(id); err != nil {
			t.Errorf("Abort after Commit removed the message: %v", err)
		}
	})
	if ids, _ := s.Queued(); len(ids) != 1 {
		t.Errorf("Queued = %v, want only the committed message", ids)
	}
}

func TestUpdate(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	id := commit(t, s, testEnvelope("a@x", "b@y", "c@y"), []byte("body"))

	env, err := s.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	env.Attempts = 1
	env.NextTry = time.Now().Add(time.Hour)
	env.Rcpts[1] = Rcpt{Addr: "c@y", Done: true, Status: "550 5.1.1 no such user \xff"}
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	if after.FileSyncs != before.FileSyncs+1 || after.DirSyncs != before.DirSyncs+1 || after.Updates != 1 {
		t.Errorf("Update did %d file and %d directory fsyncs, want 1 and 1",
			after.FileSyncs-before.FileSyncs, after.DirSyncs-before.DirSyncs)
	}
	env.Rcpts[1].Status = "550 5.1.1 no such user \uFFFD" // free text is made valid UTF-8

	// Durable means visible to a fresh process.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openSpool(t, dir)
	got, err := s.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	if !envEqual(got, env) {
		t.Errorf("after reopen Envelope = %+v, want %+v", got, env)
	}

	bad := []struct {
		name string
		edit func(e *Envelope)
		want error
	}{
		{"size changed", func(e *Envelope) { e.Size++ }, nil},
		{"bad ID", func(e *Envelope) { e.ID = "../../etc/passwd" }, ErrBadID},
		{"unknown ID", func(e *Envelope) { e.ID = idEncoding.EncodeToString(make([]byte, 15)) }, ErrNotFound},
		{"no recipients", func(e *Envelope) { e.Rcpts = nil }, nil},
		{"invalid address", func(e *Envelope) { e.Rcpts[0].Addr = "\xff@x" }, nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			e := *got
			e.Rcpts = slices.Clone(got.Rcpts)
			tt.edit(&e)
			err := s.Update(&e)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Update: %v, want error %v", err, tt.want)
			}
		})
	}
	if e, err := s.Envelope(id); err != nil || !envEqual(e, env) {
		t.Errorf("failed Updates changed the state: %+v, %v", e, err)
	}

	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(got); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update after Remove: %v, want ErrNotFound", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, queueDir)); len(entries) != 0 {
		t.Errorf("queue/ after Remove holds %v", entries)
	}
}

// TestCorrupt damages message and state files (large messages, and
// small ones once Update has moved them out of the log).
func TestCorrupt(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	tests := []struct {
		name         string
		damage       func(t *testing.T, msg, state string)
		envelopeFail bool // Envelope must fail; otherwise reading the body must
	}{
		{"truncated by one byte", func(t *testing.T, msg, _ string) { truncate(t, msg, -1) }, true},
		{"truncated to the body", func(t *testing.T, msg, _ string) { truncate(t, msg, int64(len(body))) }, true},
		{"truncated to 10 bytes", func(t *testing.T, msg, _ string) { truncate(t, msg, 10) }, true},
		{"empty", func(t *testing.T, msg, _ string) { truncate(t, msg, 0) }, true},
		{"byte appended", func(t *testing.T, msg, _ string) { appendTo(t, msg, "x") }, true},
		{"envelope byte flipped", func(t *testing.T, msg, _ string) { flip(t, msg, int64(len(body))+5) }, true},
		{"trailer byte flipped", func(t *testing.T, msg, _ string) { flip(t, msg, -30) }, true},
		{"magic byte flipped", func(t *testing.T, msg, _ string) { flip(t, msg, -1) }, true},
		{"body byte flipped", func(t *testing.T, msg, _ string) { flip(t, msg, 500) }, false},
		{"state file garbage", func(t *testing.T, _, state string) {
			if err := os.WriteFile(state, []byte("not a state file"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"state file of another message", func(t *testing.T, msg, state string) {
			data, err := os.ReadFile(state)
			if err != nil {
				t.Fatal(err)
			}
			other := strings.Repeat("0", idLen)
			data = bytes.Replace(data, []byte(filepath.Base(msg)), []byte(other), 1)
			data = fixCRCs(data)
			if err := os.WriteFile(state, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openSpool(t, "")
			id := commit(t, s, testEnvelope("a@x", "b@y"), body)
			env, err := s.Envelope(id)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 { // out of the log, then a state file
				env.Attempts = i + 1
				if err := s.Update(env); err != nil {
					t.Fatal(err)
				}
			}
			tt.damage(t, s.messagePath(id), s.statePath(id))

			_, err = s.Envelope(id)
			if tt.envelopeFail {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("Envelope: %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Envelope: %v", err)
			}
			b, err := s.Body(id)
			if err != nil {
				t.Fatalf("Body: %v", err)
			}
			defer b.Close()
			if _, err := io.ReadAll(b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("reading damaged body: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestQuarantine: a damaged message and its state leave the queue for
// corrupt/, whole, and the queue no longer lists it.
func TestQuarantine(t *testing.T) {
	s := openSpool(t, "")
	id := commit(t, s, testEnvelope("a@x", "b@y"), []byte("body\r\n"))
	env, err := s.Envelope(id)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // out of the log, then a state file
		if err := s.Update(env); err != nil {
			t.Fatal(err)
		}
	}
	truncate(t, s.messagePath(id), 3)
	if err := s.Quarantine(id); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.Queued(); err != nil || len(ids) != 0 {
		t.Fatalf("Queued after Quarantine: %v, %v", ids, err)
	}
	for _, name := range []string{id, id + stateSuffix} {
		if _, err := os.Stat(filepath.Join(s.dir, corruptDir, name)); err != nil {
			t.Errorf("%s not in corrupt/: %v", name, err)
		}
	}
	if err := s.Quarantine(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Quarantine: %v, want ErrNotFound", err)
	}
}

func truncate(t *testing.T, name string, size int64) {
	t.Helper()
	if size < 0 {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, name, s string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// flip inverts the byte at off, counted from the end if negative.
func flip(t *testing.T, name string, off int64) {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(data))
	}
	data[off] ^= 0xff
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	if _, err := s.Create(&Envelope{From: "a@x"}); err == nil {
		t.Error("Create without recipients succeeded")
	}
	w, err := s.Create(testEnvelope("\xfe@x", "b@y"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err == nil {
		t.Error("Commit with a sender that is not UTF-8 succeeded")
	}
	if left, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(left) != 0 {
		t.Errorf("failed Commit left %v in tmp/", left)
	}
	for _, id := range []string{"", "..", "../lock", strings.Repeat("a", idLen), strings.Repeat("W", idLen), strings.Repeat("0", idLen-1) + "/"} {
		if _, err := s.Envelope(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Envelope(%q): %v, want ErrBadID", id, err)
		}
		if _, err := s.Body(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Body(%q): %v, want ErrBadID", id, err)
		}
		if err := s.Remove(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Remove(%q): %v, want ErrBadID", id, err)
		}
	}
	missing := idEncoding.EncodeToString(make([]byte, 15))
	if _, err := s.Envelope(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Envelope of a missing message: %v, want ErrNotFound", err)
	}
	if err := s.Remove(missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove of a missing message: %v, want ErrNotFound", err)
	}
}

func TestOpenTwice(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	if s2, err := Open(dir, nil); err == nil {
		s2.Close()
		t.Fatal("second Open of a spool in use succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openSpool(t, dir)
}

func TestClosed(t *testing.T) {
	s := openSpool(t, "")
	id := commit(t, s, testEnvelope("a@x", "b@y"), []byte("x"))
	w, err := s.Create(testEnvelope("a@x", "b@y"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Create(testEnvelope("a@x", "b@y")); !errors.Is(err, ErrClosed) {
		t.Errorf("Create after Close: %v", err)
	}
	if _, err := s.Envelope(id); !errors.Is(err, ErrClosed) {
		t.Errorf("Envelope after Close: %v", err)
	}
	if err := s.Remove(id); !errors.Is(err, ErrClosed) {
		t.Errorf("Remove after Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// TestLargeMessageMemory checks that a 10 MiB body is streamed, not held:
// committing it allocates a small fraction of its size.
func TestLargeMessageMemory(t *testing.T) {
	s := openSpool(t, "")
	const size = 10 << 20
	chunk := pseudoRandom(64<<10, 2)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	w, err := s.Create(testEnvelope("a@x", "b@y"))
	if err != nil {
		t.Fatal(err)
	}
	for range size / len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	id, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("committing %d bytes allocated %d bytes", size, alloc)
	}
	b, err := s.Body(id)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n, err := io.Copy(io.Discard, b); n != size || err != nil {
		t.Errorf("read back %d bytes, %v", n, err)
	}
}

func TestIDs(t *testing.T) {
	var g idGen
	now := time.Now()
	prev := ""
	for range 1000 {
		id := g.next(now) // the same instant: the counter keeps order
		if !validID(id) || id <= prev {
			t.Fatalf("ID %q after %q: valid %v, want valid and increasing", id, prev, validID(id))
		}
		prev = id
	}
	if later := g.next(now.Add(time.Second)); later <= prev {
		t.Errorf("later ID %q sorts before %q", later, prev)
	}
	var other idGen
	if a, b := g.next(now.Add(time.Hour)), other.next(now.Add(time.Hour)); a == b {
		t.Errorf("two generators made the same ID %s", a)
	}
}

func TestIDTime(t *testing.T) {
	var g idGen
	now := time.Unix(1_800_000_000, 123456789)
	id := g.next(now)
	got, ok := IDTime(id)
	if !ok || !got.Equal(now) {
		t.Errorf("IDTime(%s) = %v, %v; want %v", id, got, ok, now)
	}
	if _, ok := IDTime("not-an-id"); ok {
		t.Error("IDTime of a bad ID")
	}
}

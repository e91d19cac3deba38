package deliver

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestMaildirCleanTmp: what a crash left in tmp/ goes, at once for
// mxguard's own files (of an earlier process, or of a version without the
// token), after 36 hours for other programs'; a file this Maildir is
// writing stays, and so does everything outside tmp/.
func TestMaildirCleanTmp(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	log := newLogRecorder(t)
	m := NewMaildir(root, "mx.test", []string{"example.org", "localhost"}, slog.New(log))
	const id = "33LL1RPR02B256FPIGG99KVR"
	env := testEnvelope("s@example.net", "bob@example.org")
	env.ID = id
	put := func(rel string) string {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, box := range []string{"example.org/bob", "example.org/carol", "localhost/alice", "localhost/empty"} {
		if err := (&Maildir{}).ensureMaildir(filepath.Join(root, box)); err != nil {
			t.Fatal(err)
		}
	}
	crashed := put("example.org/bob/tmp/1700000000.S" + id + "R0G0123456789abcdef.mx.test")
	oldFormat := put("example.org/carol/tmp/1700000000.S" + id + "R3.old-host")
	writing := put("localhost/alice/tmp/" + m.tmpName(env, 0))
	dovecot := put("example.org/bob/tmp/1700000000.M123456P789.mx.test")
	keep := []string{
		writing, dovecot,
		put("example.org/bob/new/1700000000.S" + id + "R1.mx.test"),                // delivered
		put("example.org/bob/tmp/sub/1700000000.S" + id + "R2G0123456789abcdef.x"), // not a file of tmp/
		put("example.org/README"), // not a mailbox
	}

	if n := m.CleanTmp(context.Background(), time.Now()); n != 2 {
		t.Errorf("removed %d files, want 2", n)
	}
	for _, p := range []string{crashed, oldFormat} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s: still there (%v)", p, err)
		}
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("removed what it must keep: %v", err)
		}
	}
	if n := log.count("maildir: removed 2 stale files from tmp/", "own", "2", "foreign", "0", "mailboxes", "4"); n != 1 {
		t.Errorf("%d summary lines with own=2 foreign=0 mailboxes=4, want 1", n)
	}

	// A day and a half later the other program's file is abandoned; the
	// one this Maildir writes is still its own.
	if n := m.CleanTmp(context.Background(), time.Now().Add(TmpStale+time.Minute)); n != 1 {
		t.Errorf("36 hours on: removed %d files, want 1", n)
	}
	if _, err := os.Stat(dovecot); !os.IsNotExist(err) {
		t.Errorf("foreign file older than 36 hours still there (%v)", err)
	}
	if _, err := os.Stat(writing); err != nil {
		t.Errorf("the file being written was removed: %v", err)
	}

	// The next start is another Maildir value: the first one's file is a
	// leftover now.
	next := NewMaildir(root, "mx.test", []string{"example.org", "localhost"}, slog.New(log))
	if n := next.CleanTmp(context.Background(), time.Now()); n != 1 {
		t.Errorf("after a restart: removed %d files, want 1", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "localhost/alice/tmp")); len(ents) != 0 {
		t.Errorf("after a restart alice's tmp/ holds %v", ents)
	}
}

// TestMaildirCleanTmpStops: an ended context stops the walk, which says so.
func TestMaildirCleanTmpStops(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	log := newLogRecorder(t)
	m := NewMaildir(root, "mx.test", []string{"example.org"}, slog.New(log))
	p := filepath.Join(root, "example.org/bob/tmp/1700000000.S33LL1RPR02B256FPIGG99KVRR0.mx.test")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n := m.CleanTmp(ctx, time.Now()); n != 0 {
		t.Errorf("removed %d files after the context ended", n)
	}
	if log.count("maildir: removed 0 stale files from tmp/", "interrupted", "true") != 1 {
		t.Error("no summary line saying it was interrupted")
	}
}

// TestMaildirTmpNames: files in tmp/ carry the Maildir value's token, and
// what is delivered does not; ownTmp knows both.
func TestMaildirTmpNames(t *testing.T) {
	m := NewMaildir(t.TempDir(), "mx.test", nil, nil)
	env := testEnvelope("", "x@y")
	env.ID = "33LL1RPR02B256FPIGG99KVR"
	tmp, final := m.tmpName(env, 7), m.fileName(env, 7)
	if want := "1700000000.S33LL1RPR02B256FPIGG99KVRR7G" + m.token + ".mx.test"; tmp != want {
		t.Errorf("tmpName = %q, want %q", tmp, want)
	}
	for _, n := range []string{tmp, final} {
		if ownTmp.FindStringSubmatch(n) == nil {
			t.Errorf("ownTmp does not match %q", n)
		}
	}
	if sm := ownTmp.FindStringSubmatch(tmp); sm == nil || sm[1] != m.token {
		t.Errorf("token from %q: %q, want %q", tmp, sm, m.token)
	}
	other := NewMaildir(t.TempDir(), "mx.test", nil, nil)
	if other.token == m.token || len(m.token) != 16 {
		t.Errorf("tokens %q and %q: want two different 16-digit ones", m.token, other.token)
	}
	for _, n := range []string{
		"1700000000.M123456P789.mx.test",            // Dovecot
		"1700000000.12345.mx.test",                  // qmail
		"1700000000.V801I2M3P4.mx.test",             // Postfix local
		"1700000000.SnotanidR0.mx.test",             // not a spool ID
		"1700000000.S33LL1RPR02B256FPIGG99KVRR.x",   // no index
		"x1700000000.S33LL1RPR02B256FPIGG99KVRR0.x", // not from the start
	} {
		if ownTmp.MatchString(n) {
			t.Errorf("ownTmp matches another program's name %q", n)
		}
	}
}

// BenchmarkCleanTmp walks a mail root of 5,000 mailboxes (warm cache, empty
// tmp/ directories, as after a clean stop), the cost of the walk itself.
func BenchmarkCleanTmp(b *testing.B) {
	root := filepath.Join(b.TempDir(), "mail")
	const boxes = 5000
	for i := range boxes {
		dir := filepath.Join(root, "example.org", "user"+strconv.Itoa(i))
		for _, sub := range []string{"tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				b.Fatal(err)
			}
		}
	}
	m := NewMaildir(root, "mx.test", []string{"example.org"}, nil)
	for b.Loop() {
		m.CleanTmp(context.Background(), time.Now())
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/boxes, "µs/mailbox")
}

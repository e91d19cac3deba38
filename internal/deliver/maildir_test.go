package deliver

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func newTestMaildir(t *testing.T) (*Maildir, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "mail")
	return NewMaildir(root, "mx.test", []string{"Example.ORG", "localhost"}, testLogger(t)), root
}

// files returns the names in dir/sub, sorted.
func files(t *testing.T, dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestMaildirDeliver(t *testing.T) {
	m, root := newTestMaildir(t)
	env := testEnvelope("sender@example.net", "Bob@Example.org", "alice@localhost", "postmaster")
	res := m.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
	for i, r := range res {
		if r.Status != Delivered || !strings.HasPrefix(r.Reply, "250 2.0.0") {
			t.Errorf("rcpt %d: %+v", i, r)
		}
	}
	for i, box := range []string{"example.org/bob", "localhost/alice", "example.org/postmaster"} {
		dir := filepath.Join(root, box)
		if tmp := files(t, dir, "tmp"); len(tmp) != 0 {
			t.Errorf("%s: tmp/ holds %q", box, tmp)
		}
		if cur := files(t, dir, "cur"); len(cur) != 0 {
			t.Errorf("%s: cur/ holds %q", box, cur)
		}
		newFiles := files(t, dir, "new")
		want := "1700000000.ST1R" + string(rune('0'+i)) + ".mx.test"
		if len(newFiles) != 1 || newFiles[0] != want {
			t.Fatalf("%s: new/ holds %q, want [%s]", box, newFiles, want)
		}
		b, err := os.ReadFile(filepath.Join(dir, "new", want))
		if err != nil {
			t.Fatal(err)
		}
		wantContent := "Return-Path: <sender@example.net>\nDelivered-To: " + env.Rcpts[i].Addr + "\n" + wantBody
		if string(b) != wantContent {
			t.Errorf("%s: content\n%q\nwant\n%q", box, b, wantContent)
		}
	}
}

func TestMaildirRefuses(t *testing.T) {
	tests := []struct{ addr, enhanced string }{
		{"../escape@example.org", "5.1.3"},
		{"..@example.org", "5.1.3"},
		{".hidden@example.org", "5.1.3"},
		{"a/b@example.org", "5.1.3"},
		{"nul\x00@example.org", "5.1.3"},
		{"line\nbreak@example.org", "5.1.3"},
		{"@example.org", "5.1.3"},
		{"user@elsewhere.net", "5.1.2"},
		{"user@../example.org", "5.1.2"},
		{"user@", "5.1.2"},
	}
	m, root := newTestMaildir(t)
	for _, tt := range tests {
		env := testEnvelope("s@example.net", tt.addr)
		res := m.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
		if res[0].Status != Failed || !strings.HasPrefix(res[0].Reply, "550 "+tt.enhanced+" ") {
			t.Errorf("%q: %+v, want failed with 550 %s", tt.addr, res[0], tt.enhanced)
		}
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("refused deliveries created %s (%v)", root, err)
	}
}

// TestMaildirPathCase: addresses that differ in ASCII case share a
// mailbox; no other case mapping applies, so that a mailbox is the one the
// access map's To: entries (folded in ASCII only) speak of.
func TestMaildirPathCase(t *testing.T) {
	m, root := newTestMaildir(t)
	for _, tt := range []struct{ addr, box string }{
		{"Kevin@EXAMPLE.org", "example.org/kevin"},
		{"\u212Aevin@example.org", "example.org/\u212Aevin"}, // KELVIN SIGN, which Unicode lowers to k
		{"J\u00dcRGEN@example.org", "example.org/j\u00dcrgen"},
	} {
		got, err := m.Path(tt.addr)
		if want := filepath.Join(root, tt.box); err != nil || got != want {
			t.Errorf("Path(%q) = %q, %v; want %q", tt.addr, got, err, want)
		}
	}
}

// TestMaildirExactlyOnce redelivers as a restart after a crash between the
// Maildir rename and the spool update would: the message must not appear
// twice, wherever the mail reader has moved it.
func TestMaildirExactlyOnce(t *testing.T) {
	m, root := newTestMaildir(t)
	dir := filepath.Join(root, "example.org", "bob")
	env := testEnvelope("s@example.net", "bob@example.org")
	deliver := func() Result {
		t.Helper()
		res := m.Deliver(context.Background(), env, bodyOf(testBody), []int{0}, nil)
		if res[0].Status != Delivered {
			t.Fatalf("%+v", res[0])
		}
		return res[0]
	}
	deliver()
	name := files(t, dir, "new")[0]
	if r := deliver(); !strings.Contains(r.Reply, "already") {
		t.Errorf("second delivery: %q, want it to find the first", r.Reply)
	}
	if n := files(t, dir, "new"); len(n) != 1 {
		t.Fatalf("new/ holds %q after redelivery", n)
	}
	// The mail reader saw it and moved it to cur/ with flags.
	if err := os.Rename(filepath.Join(dir, "new", name), filepath.Join(dir, "cur", name+":2,S")); err != nil {
		t.Fatal(err)
	}
	deliver()
	if n, c := files(t, dir, "new"), files(t, dir, "cur"); len(n) != 0 || len(c) != 1 {
		t.Fatalf("after redelivery new/ = %q, cur/ = %q", n, c)
	}
	// Another message, and the same message's other recipient, are new.
	env.Rcpts = append(env.Rcpts, env.Rcpts[0])
	m.Deliver(context.Background(), env, bodyOf(testBody), []int{1}, nil)
	other := testEnvelope("s@example.net", "bob@example.org")
	other.ID = "T2"
	m.Deliver(context.Background(), other, bodyOf(testBody), []int{0}, nil)
	if n := files(t, dir, "new"); len(n) != 2 {
		t.Fatalf("new/ = %q, want two more messages", n)
	}
}

func TestMaildirIOError(t *testing.T) {
	root := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(root, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewMaildir(root, "mx.test", []string{"example.org"}, testLogger(t))
	env := testEnvelope("s@example.net", "bob@example.org")
	res := m.Deliver(context.Background(), env, bodyOf(testBody), all(env), nil)
	if res[0].Status != Deferred || !strings.HasPrefix(res[0].Reply, "451 4.3.0") || strings.Contains(res[0].Reply, root) {
		t.Errorf("%+v, want deferred with 451 4.3.0 and no path", res[0])
	}
}

func TestMaildirFileName(t *testing.T) {
	tests := []struct {
		id, host string
		idx      int
		want     string
	}{
		{"ABC123", "mx.test", 0, "1700000000.SABC123R0.mx.test"},
		{"a.b:c_d/e", "h", 12, "1700000000.Sa_2eb_3ac_5fd_2feR12.h"},
		{"x", "weird/host:name", 1, `1700000000.SxR1.weird\057host\072name`},
	}
	for _, tt := range tests {
		m := NewMaildir(t.TempDir(), tt.host, nil, testLogger(t))
		env := testEnvelope("", "x@y")
		env.ID = tt.id
		if got := m.fileName(env, tt.idx); got != tt.want {
			t.Errorf("fileName(%q, %d) = %q, want %q", tt.id, tt.idx, got, tt.want)
		}
	}
}

func BenchmarkMaildirDeliver(b *testing.B) {
	root := b.TempDir()
	m := NewMaildir(root, "mx.test", []string{"example.org"}, nil)
	msg := string(benchMessage())
	env := testEnvelope("s@example.net", "bob@example.org")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		env.ID = "B" + strconv.Itoa(i)
		if r := m.Deliver(context.Background(), env, bodyOf(msg), []int{0}, nil); r[0].Status != Delivered {
			b.Fatal(r)
		}
	}
}

package deliver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/spool"
)

func TestMaildirStore(t *testing.T) {
	root := t.TempDir()
	m := NewMaildir(root, "mx.test", []string{"example.org"}, nil)
	env := &spool.Envelope{
		ID:       "33LL1RPR02B256FPIGG99KVR",
		From:     "alice@example.net",
		Received: time.Unix(1700000000, 0),
		Rcpts:    []spool.Rcpt{{Addr: "bob@example.org"}, {Addr: "Carol@Example.org"}, {Addr: "BOB@example.org"}},
	}
	name, err := m.Store(env, strings.NewReader("Subject: hi\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <alice@example.net>\nSubject: hi\n\nbody\n"
	var inodes []uint64
	for _, u := range []string{"bob", "carol"} {
		files, _ := filepath.Glob(filepath.Join(root, "example.org", u, "new", "*"))
		if len(files) != 1 || filepath.Base(files[0]) != name {
			t.Fatalf("%s: new/ holds %v, want exactly %s", u, files, name)
		}
		b, err := os.ReadFile(files[0])
		if err != nil || string(b) != want {
			t.Fatalf("%s: %q, %v; want %q", u, b, err, want)
		}
		fi, _ := os.Stat(files[0])
		inodes = append(inodes, inode(fi))
		if tmp, _ := filepath.Glob(filepath.Join(root, "example.org", u, "tmp", "*")); len(tmp) != 0 {
			t.Fatalf("%s: left in tmp/: %v", u, tmp)
		}
	}
	if inodes[0] != inodes[1] {
		t.Errorf("copies are separate files, want one file linked twice")
	}

	env.Rcpts = []spool.Rcpt{{Addr: "dave@example.org"}, {Addr: "eve@elsewhere.example"}}
	env.ID = "33LL1RPR02B256FPIGG99KVS"
	if _, err := m.Store(env, strings.NewReader("x\r\n")); !errors.Is(err, ErrNotLocal) {
		t.Fatalf("non-local recipient: err = %v, want ErrNotLocal", err)
	}
	if files, _ := filepath.Glob(filepath.Join(root, "example.org", "dave", "new", "*")); len(files) != 0 {
		t.Fatalf("a refused message reached dave: %v", files)
	}
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

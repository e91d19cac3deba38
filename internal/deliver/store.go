package deliver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/mxguard/mxguard/internal/spool"
)

// Store writes a message that is for local recipients only straight into
// their Maildirs, durably, while the SMTP client waits for its 250: the
// file is written once into the first recipient's tmp/, fsynced,
// hard-linked into the new/ of every other recipient and renamed into the
// first's, and each new/ directory is fsynced. A Maildir that has fsynced
// the message is as durable as the spool, so going through the spool first
// would only write, sync and delete the same bytes once more; on this
// machine's disk that doubled the filesystem work per message (see
// BENCHMARKS.md). env.ID must be set (spool.NewID); body is the message as
// received, with CRLF line endings.
//
// The copies are links to one file, so the file carries Return-Path but no
// per-recipient Delivered-To. On error nothing is left in any new/ and the
// caller answers with a temporary failure; the client retries.
func (m *Maildir) Store(env *spool.Envelope, body io.Reader) (name string, err error) {
	var dirs []string
	seen := make(map[string]bool)
	for _, rc := range env.Rcpts {
		dir, err := m.Path(rc.Addr)
		if err != nil {
			return "", err
		}
		if !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 {
		return "", errors.New("no recipients")
	}
	for _, dir := range dirs {
		if err := m.ensureMaildir(dir); err != nil {
			return "", err
		}
	}
	name = m.fileName(env, 0)
	tmp := filepath.Join(dirs[0], "tmp", m.tmpName(env, 0))
	if err := m.writeTmp(tmp, env.From, body); err != nil {
		return "", err
	}
	var linked []string
	undo := func() { // tmp is gone once renamed; removing it then is harmless
		for _, p := range linked {
			os.Remove(p)
		}
		os.Remove(tmp)
	}
	for _, dir := range dirs[1:] {
		p := filepath.Join(dir, "new", name)
		if err := os.Link(tmp, p); err != nil {
			undo()
			return "", err
		}
		linked = append(linked, p)
	}
	first := filepath.Join(dirs[0], "new", name)
	if err := os.Rename(tmp, first); err != nil {
		undo()
		return "", err
	}
	linked = append(linked, first)
	if err := m.syncDirs(dirs); err != nil {
		undo()
		return "", err
	}
	return name, nil
}

// writeTmp writes the message to path with LF line endings and fsyncs it.
func (m *Maildir) writeTmp(path, from string, body io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 32<<10)
	fmt.Fprintf(w, "Return-Path: <%s>\n", sanitizeHeader(from))
	err = copyUnixLines(w, body)
	if err == nil {
		err = m.fsync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// syncDirs fsyncs the new/ of each Maildir, in parallel: each is a
// separate wait on the disk.
func (m *Maildir) syncDirs(dirs []string) error {
	if len(dirs) == 1 {
		return m.syncDir(filepath.Join(dirs[0], "new"))
	}
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, dir := range dirs {
		wg.Go(func() { errs[i] = m.syncDir(filepath.Join(dir, "new")) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

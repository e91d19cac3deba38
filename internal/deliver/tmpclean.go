package deliver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// TmpStale is how long a file another program put in a Maildir's tmp/ may
// sit there unused before CleanTmp removes it: the Maildir specification's
// 36 hours (https://cr.yp.to/proto/maildir.html).
const TmpStale = 36 * time.Hour

// ownTmp matches the names Maildir gives its files in tmp/: <seconds>.S
// <spool ID>R<recipient index>, the token of the Maildir value that wrote
// it (absent before tokens were added), then the host. Submatch 1 is the
// token. Spool IDs are 24 characters of base32hex, which no other
// program's Maildir names contain after ".S".
var ownTmp = regexp.MustCompile(`^[0-9]+\.S[0-9A-V]{24}R[0-9]+(?:G([0-9a-f]{16}))?\.`)

// newToken returns 64 random bits in hex: a new one for every Maildir
// value, so for every start of the server.
func newToken() string {
	var b [8]byte
	rand.Read(b[:]) // never fails, per its documentation
	return hex.EncodeToString(b[:])
}

// CleanTmp removes what a crash left in the tmp/ directories of the
// Maildirs under the root (<root>/<domain>/<local part>/tmp), as the
// Maildir convention has every writer do. A file in tmp/ was never
// delivered (it reaches new/ only by its rename, after its fsync), so it is
// nobody's mail, only lost space.
//
// Files named as this package names them are removed at once unless this
// Maildir value is writing them (their name carries its token): another
// mxguard process writing under the same root would be one sharing its
// data directory, which the spool's lock rules out, so they belong to a
// process that died. Files of other programs (an LDA or an IMAP server
// delivering into the same Maildirs) may be in the middle of being
// written; they are removed only when not read, written or changed for
// TmpStale before now.
//
// It reads the root and each domain directory once and each tmp/ once,
// never new/ or cur/, and logs one line with the counts. It stops early
// when ctx ends. It returns the number of files removed.
func (m *Maildir) CleanTmp(ctx context.Context, now time.Time) int {
	c := tmpCleaner{m: m, ctx: ctx, cutoff: now.Add(-TmpStale)}
	start := time.Now()
	c.eachDir(m.root, func(domain string) {
		c.eachDir(domain, func(box string) {
			c.cleanTmp(filepath.Join(box, "tmp"))
		})
	})
	level := slog.LevelInfo
	attrs := []any{"own", c.own, "foreign", c.foreign, "mailboxes", c.boxes,
		"elapsed", time.Since(start).Round(time.Millisecond)}
	if ctx.Err() != nil {
		attrs = append(attrs, "interrupted", true)
	}
	if c.errs > 0 {
		level = slog.LevelWarn
		attrs = append(attrs, "errors", c.errs, "err", c.firstErr.Error())
	}
	removed := c.own + c.foreign
	m.logger.Log(context.Background(), level, fmt.Sprintf("maildir: removed %d stale files from tmp/", removed), attrs...)
	return removed
}

type tmpCleaner struct {
	m      *Maildir
	ctx    context.Context
	cutoff time.Time

	boxes, own, foreign, errs int
	firstErr                  error
}

func (c *tmpCleaner) fail(err error) {
	if c.errs == 0 {
		c.firstErr = err
	}
	c.errs++
}

// eachDir calls fn with the path of every subdirectory of dir, reading
// dir a batch at a time, so that a domain with many mailboxes costs no
// more memory than one with few.
func (c *tmpCleaner) eachDir(dir string, fn func(string)) {
	c.eachEntry(dir, func(e fs.DirEntry) {
		if e.IsDir() {
			fn(filepath.Join(dir, e.Name()))
		}
	})
}

// eachEntry calls fn for every entry of dir and reports whether dir could
// be opened.
func (c *tmpCleaner) eachEntry(dir string, fn func(fs.DirEntry)) bool {
	if c.ctx.Err() != nil {
		return false
	}
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false // no mail yet, or a directory that is no Maildir
	}
	if err != nil {
		c.fail(err)
		return false
	}
	defer f.Close()
	for c.ctx.Err() == nil {
		ents, err := f.ReadDir(256)
		for _, e := range ents {
			fn(e)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			c.fail(err)
			break
		}
	}
	return true
}

func (c *tmpCleaner) cleanTmp(tmp string) {
	opened := c.eachEntry(tmp, func(e fs.DirEntry) {
		if !e.Type().IsRegular() {
			return
		}
		name := e.Name()
		own := false
		if sm := ownTmp.FindStringSubmatch(name); sm != nil {
			if sm[1] == c.m.token {
				return // being written by this process
			}
			own = true
		} else {
			fi, err := e.Info()
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					c.fail(err)
				}
				return
			}
			if !lastUse(fi).Before(c.cutoff) {
				return
			}
		}
		if err := os.Remove(filepath.Join(tmp, name)); err != nil {
			if !errors.Is(err, fs.ErrNotExist) { // its owner took it meanwhile
				c.fail(err)
			}
			return
		}
		if own {
			c.own++
		} else {
			c.foreign++
		}
	})
	if opened {
		c.boxes++
	}
}

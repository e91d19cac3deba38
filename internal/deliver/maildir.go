package deliver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/spool"
)

// Maildir delivers to Maildir directories under a root:
// <root>/<domain>/<localpart>/{tmp,new,cur}, created as needed. Domain and
// local part are lower-cased (ASCII letters only, as sendmail and the access
// map fold them). Recipients outside the local domains fail
// permanently: with no relay configured there is nowhere else to take them.
//
// A message's file name is "<arrival time>.S<spool ID>R<recipient
// index>.<host>", which is unique in the sense of the Maildir specification
// (one spool ID is never reused, and one delivery per recipient index) and
// at the same time predictable: before writing, Maildir looks for that name
// in new/ and cur/, so a delivery that completed just before a crash is not
// repeated. While it is written, the file's name in tmp/ also carries a
// token of this Maildir value ("...R0G<token>.<host>"), which tells
// CleanTmp the files it must leave alone from those a crash left behind.
type Maildir struct {
	root    string
	host    string // the host part of file names, escaped
	token   string // in tmp/ names of this value's writes: see tmpName
	domains map[string]bool
	// defaultDomain completes a domain-less recipient (RFC 5321 allows a
	// bare "postmaster").
	defaultDomain string
	logger        *slog.Logger
	// OnFsync, when set (before the first delivery), is told the duration
	// of every fsync: a disk without a safe write cache shows here first.
	OnFsync func(time.Duration)
}

// NewMaildir returns a Maildir deliverer writing under root. hostname goes
// into the file names; localDomains are the domains served here (the
// domain-less address "postmaster" goes to the first of them). A nil
// logger discards.
func NewMaildir(root, hostname string, localDomains []string, logger *slog.Logger) *Maildir {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Maildir{root: root, host: escapeHost(hostname), token: newToken(), domains: make(map[string]bool), logger: logger}
	for _, d := range localDomains {
		m.domains[strings.ToLower(d)] = true
	}
	if len(localDomains) > 0 {
		m.defaultDomain = strings.ToLower(localDomains[0])
	}
	return m
}

// String names the deliverer in logs.
func (m *Maildir) String() string { return "maildir" }

// Deliver implements Deliverer. It does not call decided: a repeated
// attempt finds the files this one wrote (see Maildir), so there is no
// hurry to record the outcome.
func (m *Maildir) Deliver(ctx context.Context, env *spool.Envelope, body func() (io.ReadCloser, error), rcpts []int, _ func([]Result)) []Result {
	res := make([]Result, len(rcpts))
	for i, ri := range rcpts {
		if err := ctx.Err(); err != nil {
			res[i] = Result{Status: Deferred, Reply: localReply(451, "4.3.0", "delivery interrupted")}
			continue
		}
		res[i] = m.deliverOne(env, body, ri)
	}
	return res
}

// Errors from Path. Both are permanent: retrying cannot help.
var (
	ErrNotLocal   = errors.New("domain is not local and no relay is configured")
	ErrUnsafeName = errors.New("unsafe mailbox name")
)

// Path returns the Maildir directory for addr, or an error wrapping
// ErrNotLocal or ErrUnsafeName. A local part or domain that is empty,
// starts with '.', or contains '/', NUL or another control character is
// unsafe.
func (m *Maildir) Path(addr string) (string, error) {
	local, domain := addr, ""
	if p, err := smtpd.ParseMailbox(addr); err == nil {
		// The mailbox of "jane doe"@example.org is "jane doe", without
		// the quotes SMTP needs.
		local, domain = p.Local, p.Domain
	} else if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], addr[i+1:]
	} else {
		domain = m.defaultDomain
	}
	// ASCII only, as the access map folds addresses: Unicode case
	// mapping would take "\u212Aevin" (KELVIN SIGN) into the mailbox of
	// kevin, whom a To:kevin@ REJECT entry refuses.
	local, domain = asciiLower(local), asciiLower(domain)
	if !m.domains[domain] {
		return "", fmt.Errorf("<%s>: %w", addr, ErrNotLocal)
	}
	if !safeName(local) || !safeName(domain) {
		return "", fmt.Errorf("<%s>: %w", addr, ErrUnsafeName)
	}
	return filepath.Join(m.root, domain, local), nil
}

// asciiLower returns s with the ASCII letters A-Z in lower case and
// every other byte as it is.
func asciiLower(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return 'A' <= r && r <= 'Z' })
	if i < 0 {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

// safeName reports whether s can be used as one path element as it is.
func safeName(s string) bool {
	if s == "" || s[0] == '.' {
		return false // also "." and ".."
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r < 0x20 || r == 0x7f })
}

// fileName returns the Maildir file name for recipient index ri.
func (m *Maildir) fileName(env *spool.Envelope, ri int) string {
	return m.unique(env, ri) + "." + m.host
}

// tmpName returns the name in tmp/ of the file that becomes fileName.
func (m *Maildir) tmpName(env *spool.Envelope, ri int) string {
	return m.unique(env, ri) + "G" + m.token + "." + m.host
}

// unique returns the part of a file name before the host.
func (m *Maildir) unique(env *spool.Envelope, ri int) string {
	var b strings.Builder
	b.WriteString(strconv.FormatInt(env.Received.Unix(), 10))
	b.WriteString(".S")
	// Keep letters, digits and '-'; anything else (including '.', which
	// separates the name's parts, and ':', which starts the info) is
	// escaped as _xx, which keeps the mapping one-to-one.
	for _, c := range []byte(env.ID) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	b.WriteString("R")
	b.WriteString(strconv.Itoa(ri))
	return b.String()
}

// escapeHost applies the Maildir specification's escapes for '/' and ':'
// in the host part of a name.
func escapeHost(h string) string {
	if h == "" {
		h = "localhost"
	}
	return strings.NewReplacer("/", `\057`, ":", `\072`).Replace(h)
}

func (m *Maildir) deliverOne(env *spool.Envelope, body func() (io.ReadCloser, error), ri int) Result {
	addr := env.Rcpts[ri].Addr
	dir, err := m.Path(addr)
	if err != nil {
		enhanced := "5.1.3" // bad destination mailbox address syntax
		if errors.Is(err, ErrNotLocal) {
			enhanced = "5.1.2" // bad destination system address
		}
		return Result{Status: Failed, Reply: localReply(550, enhanced, err.Error())}
	}
	name := m.fileName(env, ri)
	if err := m.ensureMaildir(dir); err != nil {
		return ioFailure("creating maildir", err)
	}
	found, err := alreadyDelivered(dir, name)
	if err != nil {
		return ioFailure("checking maildir", err)
	}
	if found {
		m.logger.Info("maildir: message already delivered, not writing it again", "id", env.ID, "rcpt", addr, "file", name)
		return Result{Status: Delivered, Reply: localReply(250, "2.0.0", "already in maildir as "+name)}
	}
	if err := m.writeMessage(dir, m.tmpName(env, ri), name, env, addr, body); err != nil {
		return ioFailure("writing maildir", err)
	}
	return Result{Status: Delivered, Reply: localReply(250, "2.0.0", "delivered to maildir as "+name)}
}

// ioFailure turns a local error into a temporary failure. The reply keeps
// the system error but not the path, which would otherwise reach senders
// in DSNs.
func ioFailure(what string, err error) Result {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &le):
		err = le.Err
	}
	enhanced := "4.3.0"
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		enhanced = "4.2.2" // mailbox full
	}
	return Result{Status: Deferred, Reply: localReply(451, enhanced, what+": "+err.Error())}
}

// ensureMaildir creates dir and its tmp, new and cur subdirectories if they
// are missing, and makes the new entries durable.
func (m *Maildir) ensureMaildir(dir string) error {
	complete := true
	for _, sub := range []string{"tmp", "new", "cur"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			complete = false
			break
		}
	}
	if complete {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	// The new directory entries must survive a crash as much as the
	// message will; sync the mailbox and the two levels above it.
	for _, d := range []string{dir, filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} {
		if err := m.syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// alreadyDelivered looks for name in new/ (as it was delivered) and in cur/
// (where a mail reader moves it, adding ":2,<flags>").
func alreadyDelivered(dir, name string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "new", name)); err == nil {
		return true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	f, err := os.Open(filepath.Join(dir, "cur"))
	if err != nil {
		return false, err
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, n := range names {
			if n == name || strings.HasPrefix(n, name+":") {
				return true, nil
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// writeMessage writes the message to tmp/tmpName, syncs it, renames it
// into new/name and syncs new/, as the Maildir protocol and a crash
// require.
func (m *Maildir) writeMessage(dir, tmpName, name string, env *spool.Envelope, addr string, body func() (io.ReadCloser, error)) error {
	tmp := filepath.Join(dir, "tmp", tmpName)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = func() error {
		rc, err := body()
		if err != nil {
			return err
		}
		defer rc.Close()
		w := bufio.NewWriterSize(f, 32<<10)
		// As qmail-local does: the envelope sender and recipient, which
		// the message itself no longer carries.
		fmt.Fprintf(w, "Return-Path: <%s>\nDelivered-To: %s\n", sanitizeHeader(env.From), sanitizeHeader(addr))
		if err := copyUnixLines(w, rc); err != nil {
			return err
		}
		return m.fsync(f)
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new", name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return m.syncDir(filepath.Join(dir, "new"))
}

// fsync syncs f and tells OnFsync how long it took.
func (m *Maildir) fsync(f *os.File) error {
	start := time.Now()
	err := f.Sync()
	if m.OnFsync != nil {
		m.OnFsync(time.Since(start))
	}
	return err
}

// sanitizeHeader keeps an envelope address from breaking a header line.
func sanitizeHeader(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func (m *Maildir) syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = m.fsync(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

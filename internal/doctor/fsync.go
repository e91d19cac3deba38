package doctor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// SyncSamples is how many messages' worth of writes the fsync check
	// makes, unless SyncBudget runs out first.
	SyncSamples = 200
	// SyncBudget bounds the fsync check on a slow disk: two dozen samples
	// of a disk that needs 50 ms a fsync say enough.
	SyncBudget = 3 * time.Second
	// SyncSlow is the median file fsync over which the check warns. A disk
	// with a safe (battery- or flash-backed) write cache, or an SSD with
	// power-loss protection, answers in well under a millisecond; a
	// spinning disk that must reach the platters needs several.
	SyncSlow = 2 * time.Millisecond
	// syncSize is the size of each file: a small message.
	syncSize = 4 << 10
)

// Latency is the median and the 99th percentile of some waits.
type Latency struct {
	P50, P99 time.Duration
}

// SyncStats are the figures of one fsync measurement.
type SyncStats struct {
	Samples int
	// File is the fsync of a new 4 KiB file.
	File Latency
	// Dir is the fsync of the directory after the file was renamed into
	// it, which makes the rename durable.
	Dir Latency
	// Accept is the whole sequence one durable accept costs: create,
	// write, fsync, close, rename, directory fsync.
	Accept Latency
}

// Rate is the durable accepts a second this disk allows one at a time:
// 1 s / the median accept. Concurrent sessions overlap their fsyncs and
// share directory fsyncs (the spool's group commit), so a server under
// load does better than this, but not by much per session: each one's
// file fsync cannot be shared (internal/spool's package documentation has
// the measurements).
func (s SyncStats) Rate() float64 {
	if s.Accept.P50 <= 0 {
		return 0
	}
	return float64(time.Second) / float64(s.Accept.P50)
}

// MeasureSync times what mxguard does on disk for every message before it
// answers 250 (deliver.Maildir.Store, like spool.Writer.Commit): create a
// file in tmp/, write it, fsync it, close it, rename it into new/, fsync
// new/. It does so samples times in a directory of its own under dir, or
// until budget has passed (at least once), and removes that directory
// before it returns, also when ctx ends.
func MeasureSync(ctx context.Context, dir string, samples int, budget time.Duration) (SyncStats, error) {
	work, err := os.MkdirTemp(dir, ".mxguard-doctor-")
	if err != nil {
		return SyncStats{}, err
	}
	defer os.RemoveAll(work)
	tmp, dst := filepath.Join(work, "tmp"), filepath.Join(work, "new")
	for _, d := range []string{tmp, dst} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return SyncStats{}, err
		}
	}
	// Random bytes: a filesystem that compresses (ZFS, btrfs) would
	// write next to nothing for zeros.
	buf := make([]byte, syncSize)
	rand.Read(buf)

	var file, dirs, accept []time.Duration
	deadline := time.Now().Add(budget)
	for i := 0; i < samples && (i == 0 || time.Now().Before(deadline)); i++ {
		if err := ctx.Err(); err != nil {
			return SyncStats{}, err
		}
		f, d, a, err := syncOnce(tmp, dst, strconv.Itoa(i), buf)
		if err != nil {
			return SyncStats{}, err
		}
		file, dirs, accept = append(file, f), append(dirs, d), append(accept, a)
	}
	return SyncStats{Samples: len(file), File: latency(file), Dir: latency(dirs), Accept: latency(accept)}, nil
}

// syncOnce is one durable accept, timed: the file's fsync, the
// directory's, and the whole.
func syncOnce(tmp, dst, name string, buf []byte) (file, dir, all time.Duration, err error) {
	start := time.Now()
	f, err := os.OpenFile(filepath.Join(tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, 0, 0, err
	}
	_, err = f.Write(buf)
	t := time.Now()
	if err == nil {
		err = f.Sync()
	}
	file = time.Since(t)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, 0, err
	}
	if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dst, name)); err != nil {
		return 0, 0, 0, err
	}
	d, err := os.Open(dst)
	if err != nil {
		return 0, 0, 0, err
	}
	t = time.Now()
	err = d.Sync()
	dir = time.Since(t)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return file, dir, time.Since(start), err
}

func latency(d []time.Duration) Latency {
	slices.Sort(d)
	return Latency{P50: percentile(d, 50), P99: percentile(d, 99)}
}

// Fsync measures the disk under dataDir (MeasureSync, samples times or for
// budget) and reports the figures and the durable accept rate they allow.
// A median file fsync over SyncSlow is a Warn; a data_dir on a filesystem
// in memory (tmpfs), where nothing survives a reboot, or one where the
// files cannot be written, is a Fail.
func Fsync(ctx context.Context, dataDir string, samples int, budget time.Duration) []Finding {
	dir, note := existing(dataDir)
	st, err := statDir(dir)
	if err == nil && st.Volatile {
		return []Finding{finding(Fail, CheckFsync, "%s is on %s, in memory: what is in it is lost at every reboot, mail that got 250 included; "+
			"put data_dir on a disk", place(dir, note), st.Type)}
	}
	onWhat := place(dir, st.Type, note)
	s, err := MeasureSync(ctx, dir, samples, budget)
	if err != nil && ctx.Err() != nil {
		return []Finding{finding(Fail, CheckFsync, "interrupted; what it wrote in %s is removed", dir)}
	}
	if err != nil {
		return []Finding{finding(Fail, CheckFsync, "cannot write and fsync files in %s as uid %d: %v", place(dir, note), os.Geteuid(), err)}
	}
	text := fmt.Sprintf("on %s, %d samples: file fsync p50 %s, p99 %s; directory fsync p50 %s, p99 %s; "+
		"a durable accept p50 %s: about %s messages/s one at a time (1 s / accept p50)",
		onWhat, s.Samples, ms(s.File.P50), ms(s.File.P99), ms(s.Dir.P50), ms(s.Dir.P99),
		ms(s.Accept.P50), group(roundRate(s.Rate())))
	if s.File.P50 > SyncSlow {
		return []Finding{finding(Warn, CheckFsync, "%s; the median fsync is over %s: a disk without a safe write cache makes every durable write slow: "+
			"check the controller's write-back cache / BBU", text, ms(SyncSlow))}
	}
	return []Finding{finding(OK, CheckFsync, "%s", text)}
}

// roundRate rounds a rate to two significant digits: the figure is an
// estimate, and 2,400 reads as one.
func roundRate(r float64) int64 {
	n := int64(r + 0.5)
	unit := int64(1)
	for n/unit >= 100 {
		unit *= 10
	}
	return (n + unit/2) / unit * unit
}

// existing returns the directory that stands for dataDir on disk: dataDir
// itself, or when it does not exist yet its nearest existing parent, where
// serve will make it; note then says so, for the report.
func existing(dataDir string) (dir, note string) {
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	dir = dataDir
	for {
		fi, err := os.Stat(dir)
		if err == nil && fi.IsDir() || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if dir == dataDir {
		return dir, ""
	}
	return dir, "data_dir " + dataDir + " does not exist yet: serve makes it there"
}

// place names dir for the report, with what is known of it: "/var/lib/mxguard
// (ext4)".
func place(dir string, notes ...string) string {
	var keep []string
	for _, n := range notes {
		if n != "" {
			keep = append(keep, n)
		}
	}
	if len(keep) == 0 {
		return dir
	}
	return dir + " (" + strings.Join(keep, "; ") + ")"
}

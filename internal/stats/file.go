package stats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// FileName is the file the server keeps its days in, in its data
// directory.
const FileName = "stats.json"

// fileVersion is the format written; a file of another version is not
// read.
const fileVersion = 1

// MaxFileSize bounds what Load reads. KeepDays days with every table and
// histogram full stay under it (TestFileSizeBound fills them); a larger
// file was not written by mxguard.
const MaxFileSize = 8 << 20

type file struct {
	Version int   `json:"version"`
	Days    []Day `json:"days"`
}

// Save writes days to path so that a crash leaves either the old file or
// the new one, never a part: a temporary file in the same directory,
// written and fsynced, renamed over path, the directory fsynced.
func Save(path string, days []Day) error {
	b, err := Encode(days)
	if err != nil {
		return err
	}

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing there
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("stats: writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("stats: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o640); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("stats: fsync %s: %w", dir, err)
	}
	return nil
}

// Encode is the file's content for days.
func Encode(days []Day) ([]byte, error) {
	var buf bytes.Buffer
	// One day a line: the file stays readable, and a diff of two shows
	// which day changed.
	fmt.Fprintf(&buf, "{\"version\":%d,\"days\":[", fileVersion)
	for i, d := range days {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
		b, err := json.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("stats: %w", err)
		}
		buf.Write(b)
	}
	buf.WriteString("\n]}\n")
	return buf.Bytes(), nil
}

// Load reads the days Save wrote. A file that does not exist holds no
// days (nil, nil); one that cannot be read, or was not written by this
// version of mxguard, is an error naming it.
func Load(path string) ([]Day, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return Decode(b, path)
}

// Decode reads the content of a file Encode made; path names it in errors.
func Decode(b []byte, path string) ([]Day, error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a statistics file mxguard wrote", path, MaxFileSize)
	}
	var fl file
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fl); err != nil {
		return nil, fmt.Errorf("%s: not a statistics file mxguard wrote: %w", path, err)
	}
	if fl.Version != fileVersion {
		return nil, fmt.Errorf("%s: version %d, this mxguard reads version %d", path, fl.Version, fileVersion)
	}
	if len(fl.Days) > KeepDays {
		return nil, fmt.Errorf("%s: %d days, more than the %d kept", path, len(fl.Days), KeepDays)
	}
	for i := range fl.Days {
		if err := fl.Days[i].check(); err != nil {
			return nil, fmt.Errorf("%s: day %d: %w", path, i+1, err)
		}
	}
	return fl.Days, nil
}

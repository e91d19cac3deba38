package loadgen

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// WaitMaildir polls every interval until at least n files exist in the
// directories named "new" at any depth below dir, and returns how many it
// found last. It returns ctx's error if ctx ends first. A missing dir
// counts as empty, since the server may create it on first delivery.
func WaitMaildir(ctx context.Context, dir string, n int, interval time.Duration) (int, error) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		found, err := countMaildir(dir)
		if err != nil || found >= n {
			return found, err
		}
		select {
		case <-ctx.Done():
			return found, ctx.Err()
		case <-tick.C:
		}
	}
}

// countMaildir counts the regular files in every "new" directory below
// dir: the messages delivered and not yet read.
func countMaildir(dir string) (int, error) {
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			// Entries vanish while a delivery agent moves files; only
			// the root itself matters.
			if path == dir && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		}
		if d.Type().IsRegular() && filepath.Base(filepath.Dir(path)) == "new" {
			n++
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

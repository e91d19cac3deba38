// Command fsyncfloor measures what durable intake costs on one disk, the
// floor under every server's durable throughput: how many times a second
// a small file can be created, written and fsynced, one at a time and from
// many goroutines at once, and how many times a second such a file can be
// fsynced, renamed and its directory fsynced (one Maildir delivery's worth
// of durability). bench/run.sh runs it in the directory the servers write to,
// in the same run as the servers, because the figure moves from day to day
// on a shared disk.
//
// Usage:
//
//	fsyncfloor -dir DIR [-size 1024] [-conc 20] [-duration 2s]
//
// It prints one JSON object. Every file it makes is removed again.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// result is fsyncfloor's output. Rates are operations per second.
type result struct {
	Dir      string  `json:"dir"`
	Size     int     `json:"size_bytes"`
	Seconds  float64 `json:"seconds_each"`
	Serial   float64 `json:"serial_fsyncs_per_s"`      // create, write, fsync, close: one at a time
	Parallel float64 `json:"concurrent_fsyncs_per_s"`  // the same from Conc goroutines at once
	Conc     int     `json:"concurrency"`              //
	FileDir  float64 `json:"file_and_dir_syncs_per_s"` // the same, then rename and fsync the directory: one at a time
}

func main() {
	dir := flag.String("dir", "", "directory on the disk to measure (a scratch directory is made in it)")
	size := flag.Int("size", 1024, "bytes per file")
	conc := flag.Int("conc", 20, "goroutines for the concurrent measure")
	d := flag.Duration("duration", 2*time.Second, "time for each measure")
	flag.Parse()
	if *dir == "" || *size < 0 || *conc < 1 || *d <= 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	res, err := measure(context.Background(), *dir, *size, *conc, *d)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsyncfloor:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "fsyncfloor:", err)
		os.Exit(1)
	}
}

// measure runs each measure for d in a scratch directory below dir and
// removes it afterwards.
func measure(ctx context.Context, dir string, size, conc int, d time.Duration) (*result, error) {
	scratch, err := os.MkdirTemp(dir, "fsyncfloor-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	data := make([]byte, size)
	for i := range data {
		data[i] = 'x'
	}
	res := &result{Dir: dir, Size: size, Seconds: d.Seconds(), Conc: conc}

	// Each measure counts operations until its time is up; the files are
	// removed as they go, so that the directory stays small.
	if res.Serial, err = rate(ctx, d, 1, func(w, i int) error { return writeSync(scratch, w, i, data, false) }); err != nil {
		return nil, err
	}
	if res.Parallel, err = rate(ctx, d, conc, func(w, i int) error { return writeSync(scratch, w, i, data, false) }); err != nil {
		return nil, err
	}
	dirf, err := os.Open(scratch)
	if err != nil {
		return nil, err
	}
	defer dirf.Close()
	res.FileDir, err = rate(ctx, d, 1, func(w, i int) error {
		if err := writeSync(scratch, w, i, data, true); err != nil {
			return err
		}
		return dirf.Sync()
	})
	return res, err
}

// writeSync creates file i of worker w, writes data, fsyncs it and closes
// it; with keep it renames the file within the directory (the step whose
// entry a directory fsync makes durable) and removes the one before, else
// it removes the file at once.
func writeSync(dir string, w, i int, data []byte, keep bool) error {
	name := filepath.Join(dir, fmt.Sprintf("%d.%d.tmp", w, i))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if !keep {
		return os.Remove(name)
	}
	final := filepath.Join(dir, fmt.Sprintf("%d.%d", w, i))
	if err := os.Rename(name, final); err != nil {
		return err
	}
	if i > 0 {
		if err := os.Remove(filepath.Join(dir, fmt.Sprintf("%d.%d", w, i-1))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// rate runs op from n goroutines until d has passed and returns the
// operations per second.
func rate(ctx context.Context, d time.Duration, n int, op func(w, i int) error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		done  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	start := time.Now()
	for w := range n {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if err := op(w, i); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
					cancel()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

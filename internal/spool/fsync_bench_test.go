package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
)

// The benchmarks in this file measure the raw costs the group-commit design
// rests on (see the package documentation for the figures): what one fsync of
// a small new file costs, what one directory fsync costs, and how the kernel
// copes when several goroutines fsync different files at once.

// BenchmarkFsyncFile1KiB creates, writes and fsyncs one 1 KiB file per
// iteration, one goroutine.
func BenchmarkFsyncFile1KiB(b *testing.B) {
	dir := b.TempDir()
	buf := make([]byte, 1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		syncNewFile(b, filepath.Join(dir, fmt.Sprint(i)), buf)
	}
}

// BenchmarkFsyncDir renames a file into a directory and fsyncs the directory.
func BenchmarkFsyncDir(b *testing.B) {
	dir := b.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	src := filepath.Join(dir, "a")
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		dst := filepath.Join(dir, fmt.Sprint("b", i%2))
		if err := os.Rename(src, dst); err != nil {
			b.Fatal(err)
		}
		src = dst
		if err := d.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFsyncConcurrent has several goroutines each create and fsync
// their own 1 KiB files; ns/op is per file, so a figure that falls as
// goroutines are added means the kernel shares journal commits between them.
func BenchmarkFsyncConcurrent(b *testing.B) {
	for _, n := range []int{2, 4, 20, 64} {
		p := max(1, n/runtime.GOMAXPROCS(0))
		b.Run(fmt.Sprint("goroutines=", p*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			dir := b.TempDir()
			buf := make([]byte, 1024)
			var seq atomic.Int64
			b.SetParallelism(p)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					syncNewFile(b, filepath.Join(dir, fmt.Sprint(seq.Add(1))), buf)
				}
			})
		})
	}
}

func syncNewFile(b *testing.B, name string, buf []byte) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(buf); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkFdatasyncLogBatch appends a batch of twenty 1 KiB records to a
// preallocated log file and fdatasyncs it once: the cost of the alternative
// design, one shared append-only log. ns/op is per batch.
func BenchmarkFdatasyncLogBatch(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if _, err := f.WriteAt(make([]byte, 1), size-1); err != nil {
		b.Fatal(err)
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zero)) {
		if _, err := f.WriteAt(zero, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	batch := make([]byte, 20*1024)
	var off int64
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.WriteAt(batch, off); err != nil {
			b.Fatal(err)
		}
		off = (off + int64(len(batch))) % (size - int64(len(batch)))
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
	}
}

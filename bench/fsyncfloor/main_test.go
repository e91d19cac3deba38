package main

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestMeasure runs each measure briefly: every rate is positive, and the
// scratch directory is gone afterwards.
func TestMeasure(t *testing.T) {
	dir := t.TempDir()
	res, err := measure(context.Background(), dir, 512, 3, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Serial <= 0 || res.Parallel <= 0 || res.FileDir <= 0 || res.Conc != 3 || res.Size != 512 {
		t.Errorf("result %+v", res)
	}
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("%d entries left in %s", len(left), dir)
	}
}

func TestMeasureBadDir(t *testing.T) {
	if _, err := measure(context.Background(), "/nonexistent/fsyncfloor", 512, 1, 10*time.Millisecond); err == nil {
		t.Error("measure in a missing directory succeeded")
	}
}

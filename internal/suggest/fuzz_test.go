package suggest

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/stats"
)

// FuzzReadLogs reads arbitrary text as logs: never a panic or a hang,
// every line accounted for, and days the statistics file can hold (a
// network or a suffix taken from a line is always a valid one, whatever a
// client wrote into it). The committed corpus (testdata/fuzz/FuzzReadLogs)
// holds lines of each kind the reader knows.
func FuzzReadLogs(f *testing.F) {
	// Small seeds: the fuzzer minimizes each input it finds new, which
	// takes long on large ones.
	tr := traffic{seconds: 1, duration: 2 * time.Second, bots: 3}
	f.Add(tr.mxLog(false))
	f.Add(tr.mxLog(true))
	f.Add(tr.maillog())
	f.Fuzz(func(t *testing.T, s string) {
		days, rep, err := ReadLogs([]io.Reader{strings.NewReader(s)}, LogOptions{Window: time.Minute, Location: time.UTC, Now: start})
		if err != nil {
			t.Fatal(err) // a string reader never fails
		}
		if rep.Lines != rep.Mxguard+rep.Sendmail+rep.Skipped+rep.Long {
			t.Fatalf("lines unaccounted for: %+v", rep)
		}
		if len(days) > stats.KeepDays {
			t.Fatalf("%d days", len(days))
		}
		b, err := stats.Encode(days)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stats.Decode(b, "the logs' days"); err != nil {
			t.Fatalf("the days read from the logs are no valid statistics: %v", err)
		}
	})
}

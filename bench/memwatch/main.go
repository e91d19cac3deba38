// Command memwatch samples the memory of a set of server processes until it
// is interrupted, then prints the peak as JSON. bench/run.sh runs it beside
// the large-message workload, because a server's peak can be short-lived
// and only sampling shows it for Postfix, whose cleanup and smtpd
// processes come and go; for one process (mxguard) VmHWM says the same.
//
// Usage:
//
//	memwatch -pids PID,PID,...|cgroup:DIR|PATTERN [-interval 50ms]
//
// The process selection is loadgen's: a list of PIDs, the processes of a
// cgroup, or a regular expression matched against process names, the last
// two looked up afresh at each sample. RSS counts a page shared by several processes once per process;
// PSS divides it among them, which is the fair sum over Postfix's many
// processes.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/internal/loadgen"
)

// report is memwatch's output.
type report struct {
	Selection string      `json:"selection"`
	Samples   int         `json:"samples"`
	Baseline  loadgen.Mem `json:"baseline"`
	// The peaks are taken separately: the sample with the most RSS need
	// not be the one with the most PSS.
	PeakRSS   int64 `json:"peak_rss_bytes"`
	PeakPSS   int64 `json:"peak_pss_bytes"`
	PeakProcs int   `json:"peak_processes"`
}

func main() {
	spec := flag.String("pids", "", "processes: `PID,PID,...`, cgroup:DIR or a pattern matched against process names")
	interval := flag.Duration("interval", 50*time.Millisecond, "time between samples")
	flag.Parse()
	if *spec == "" || flag.NArg() > 0 || *interval <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	procs, err := loadgen.ParseProcs(*spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memwatch:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := watch(ctx, procs, *interval)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memwatch:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "memwatch:", err)
		os.Exit(1)
	}
}

// watch samples procs every interval until ctx ends.
func watch(ctx context.Context, procs *loadgen.ProcSet, interval time.Duration) (*report, error) {
	r := &report{Selection: procs.String()}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		m, err := procs.Sample()
		if err != nil {
			// A listed PID that ended is the end of the watch, not a
			// reason to lose the peak seen so far.
			if r.Samples > 0 {
				return r, nil
			}
			return nil, err
		}
		if r.Samples == 0 {
			r.Baseline = m
		}
		r.Samples++
		r.PeakRSS = max(r.PeakRSS, m.RSS)
		r.PeakPSS = max(r.PeakPSS, m.PSS)
		r.PeakProcs = max(r.PeakProcs, m.Procs)
		select {
		case <-ctx.Done():
			return r, nil
		case <-tick.C:
		}
	}
}

package server

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/mxguard/mxguard/internal/stats"
)

// trafficSave is how often the days of traffic are written to the data
// directory: a crash loses at most this much of them.
const trafficSave = 5 * time.Minute

// keepTraffic keeps the days of traffic `mxguard suggest` reads: it gives
// the metrics' Traffic the file's days at start, a sample of the load
// every interval, and writes the days back to <data_dir>/stats.json every
// save and when ctx is done. Run gives it the context that ends after the
// last session, so that the file holds every one.
func (s *Server) keepTraffic(ctx context.Context, interval, save time.Duration) {
	if s.metrics == nil {
		return
	}
	t := s.metrics.Traffic
	path := filepath.Join(s.cfg.Load().DataDir, stats.FileName)
	days, err := stats.Load(path)
	if err != nil {
		// Kept for a look, and out of the way of the new one.
		bad := path + ".bad"
		if rerr := os.Rename(path, bad); rerr != nil {
			s.log.Warn("traffic statistics not read, and kept at their path: "+err.Error(), "rename_err", rerr.Error())
			return // never overwrite what could not be read
		}
		s.log.Warn("traffic statistics not read (moved to " + bad + "); starting anew: " + err.Error())
	}
	t.Restore(days)
	write := func() {
		if err := stats.Save(path, t.Days()); err != nil {
			s.log.Warn("traffic statistics not saved: " + err.Error())
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			write()
			return
		case now := <-tick.C:
			t.SetWindow(s.cfg.Load().Limits.ConnectionRateWindowSize)
			s.metrics.SampleTraffic(now)
			if now.Sub(last) >= save {
				write()
				last = now
			}
		}
	}
}

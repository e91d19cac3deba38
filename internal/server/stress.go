package server

import (
	"context"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/stress"
)

// stressConfig is when the configuration puts the server under stress.
func stressConfig(cfg *config.Config) stress.Config {
	return stress.Config{
		SessionsPercent: cfg.Stress.SessionsPercent,
		MaxSessions:     int64(cfg.Limits.MaxDaemonChildren),
		AcceptBacklog:   cfg.Stress.AcceptBacklog,
		Hold:            cfg.Stress.Hold,
	}
}

// stressProfile is what sessions are held to under stress.
func stressProfile(cfg *config.Config) *smtpd.Stress {
	return &smtpd.Stress{
		CommandTimeout: cfg.Stress.CommandTimeout,
		MaxErrors:      cfg.Stress.HardErrorLimit,
		MaxJunk:        cfg.Stress.JunkCommandLimit,
		GreetPause:     cfg.Stress.GreetPause,
	}
}

// watchStress samples the load every interval until ctx is done, and puts
// the sessions under the stress profile and takes them out of it as the
// stress.Monitor decides. Each sample reads the configuration, so that a
// reload applies at the next one.
func (s *Server) watchStress(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	mon := stress.New(stressConfig(s.cfg.Load()))
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			cfg := s.cfg.Load()
			mon.SetConfig(stressConfig(cfg))
			tr, changed := mon.Observe(now, s.loadSample())
			switch {
			case changed:
				s.setStress(tr, now, cfg)
			case mon.On():
				if p := stressProfile(cfg); *p != *s.smtp.Stress() {
					s.smtp.SetStress(p) // a reload changed it
				}
			}
		}
	}
}

// loadSample is the load now: admitted sessions, the longest accept
// queue, and whether accepting failed since the last sample.
func (s *Server) loadSample() stress.Sample {
	sample := stress.Sample{Sessions: s.admit.Children(), AcceptFailed: s.acceptFailed.Swap(false)}
	for _, ln := range s.lns {
		if n, err := stress.AcceptQueue(ln); err == nil && n > sample.Queued {
			sample.Queued, sample.Listener = n, ln.Addr().String()
		}
	}
	return sample
}

func (s *Server) setStress(tr stress.Transition, now time.Time, cfg *config.Config) {
	s.metrics.Stress(tr.On)
	if tr.On {
		s.smtp.SetStress(stressProfile(cfg))
		s.stressNow.Store(&StressStatus{Since: now, Why: tr.Why})
		s.log.Warn("stress mode on: "+tr.Why, "stress", "on")
		return
	}
	s.smtp.SetStress(nil)
	s.stressNow.Store(nil)
	s.log.Info("stress mode off: "+tr.Why, "stress", "off")
}

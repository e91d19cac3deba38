package server

import (
	"fmt"
	"github.com/mxguard/mxguard/internal/reason"
	"net/netip"
	"slices"
	"time"

	"github.com/mxguard/mxguard/internal/config"
)

// Reload re-reads the configuration file, the access map, the TCP-wrappers
// files and the trust and deny lists (SIGHUP, `mxguard reload`). Sessions
// that are running keep the settings they started with; nothing is
// dropped. A file with errors is reported and the old settings kept.
// Settings that need new sockets or a new spool (listen, data_dir,
// delivery, fleet, resolver, control) wait for a restart.
func (s *Server) Reload() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cfg.Load()
	next := cur
	if cur.Path != "" {
		c, err := config.Load(cur.Path)
		if err != nil {
			s.log.Error("reload failed, keeping the running configuration", "err", err.Error())
			return "", err
		}
		next = c
	}
	l, err := load(next)
	if err != nil {
		s.log.Error("reload failed, keeping the running configuration", "err", err.Error())
		return "", err
	}
	sc := s.smtpConfig(next, l.tls)
	for _, w := range l.warnings {
		s.log.Warn(w)
	}
	var restart []string
	if !slices.Equal(next.Listen, cur.Listen) {
		restart = append(restart, "listen")
	}
	if next.DataDir != cur.DataDir {
		restart = append(restart, "data_dir")
	}
	if next.Delivery != cur.Delivery {
		restart = append(restart, "[delivery]")
	}
	if next.Fleet != cur.Fleet {
		restart = append(restart, "[fleet]")
	}
	if next.Resolver != cur.Resolver {
		restart = append(restart, "resolver")
	}
	if next.Control != cur.Control {
		restart = append(restart, "control")
	}
	s.cfg.Store(next)
	s.admit.SetPolicy(l.admit)
	s.envelope.Store(s.envelopePolicy(next, l.recipients))
	s.smtp.SetConfig(sc)
	msg := "configuration reloaded"
	if len(restart) > 0 {
		msg += fmt.Sprintf("; changes to %v take effect after a restart", restart)
	}
	s.log.Info(msg)
	return msg, nil
}

// Trust adds p to the trust file and to the running policy.
func (s *Server) Trust(p netip.Prefix) (string, error) {
	return s.addPrefix(p, true)
}

// Deny adds p to the deny file and to the running policy.
func (s *Server) Deny(p netip.Prefix) (string, error) {
	return s.addPrefix(p, false)
}

func (s *Server) addPrefix(p netip.Prefix, trust bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg.Load()
	msg, err := PersistPrefix(cfg, p, trust)
	if err != nil {
		return "", err
	}
	pol, _, err := LoadPolicy(cfg)
	if err != nil {
		return "", err
	}
	s.admit.SetPolicy(pol)
	s.log.Info(msg, "reason", reason.Control)
	return msg, nil
}

// Status reports what the server is doing.
func (s *Server) Status() (string, error) {
	return fmt.Sprintf("up %s, %d sessions, %d connections accepted, %d admitted now",
		time.Since(s.started).Round(time.Second), s.smtp.Sessions(), s.accepted.Load(), s.admit.Children()), nil
}

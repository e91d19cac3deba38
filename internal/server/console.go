package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/console"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reputation"
)

// BanBy is the By of a ban an operator set (`mxguard ban`, the console).
const BanBy = "operator"

// Ban bans p for d: its clients are refused at connect (554, reason
// banned) until the ban expires, `mxguard unban` or `mxguard trust`; in a
// fleet, on every node.
// A ban already on p is replaced. Bans live in the clients' score book,
// so they need [reputation] on.
func (s *Server) Ban(p netip.Prefix, d time.Duration) (string, error) {
	if s.rep == nil {
		return "", errors.New("no bans: [reputation] ban_below and tarpit_below are both 0")
	}
	if d <= 0 {
		return "", fmt.Errorf("ban: the duration must be positive, not %s", d)
	}
	now := time.Now()
	p = p.Masked()
	b := reputation.Ban{Prefix: p, Reason: reason.Control, By: BanBy, Created: now, Expires: now.Add(d)}
	s.rep.Add(b)
	msg := fmt.Sprintf("banned %s for %s, until %s", p, config.FormatDuration(d), now.Add(d).UTC().Format(time.RFC3339))
	s.log.Info(msg, "reason", reason.Control)
	if s.fleet != nil {
		b.Node = s.fleet.Node()
		if s.share(entryOf(b)) {
			msg += "; shared with the fleet"
		} else {
			msg += "; the fleet is unreachable: the other nodes get it when Redis returns"
		}
	}
	return msg, nil
}

// ConsoleState is what the console shows besides the counters.
func (s *Server) ConsoleState() console.State {
	pol := s.admit.Policy()
	st := console.State{
		Hostname: s.cfg.Load().Hostname,
		Started:  s.started,
		BansOn:   s.rep != nil,
		Denied:   pol.Denied,
		Trusted:  pol.Trusted,
	}
	if ss := s.stressNow.Load(); ss != nil {
		st.Stress = &console.Stress{Since: ss.Since, Why: ss.Why}
	}
	if s.rep != nil {
		st.Bans = s.rep.Bans()
	}
	if s.resolver != nil {
		st.Name = s.resolver.Name
	}
	return st
}

// consoleHandler is the console of [admin] console, or nil when it is off
// (or there are no metrics to show).
func (s *Server) consoleHandler() http.Handler {
	if !s.cfg.Load().Admin.Console || s.metrics == nil {
		return nil
	}
	return console.New(console.Config{
		Metrics: s.metrics,
		Server:  s,
		Token:   func() (string, error) { return consoleToken(s.cfg.Load()) },
		Log:     s.log,
	})
}

// consoleToken is the console's token from cfg, read from its file when
// it has one: "" for none.
func consoleToken(cfg *config.Config) (string, error) {
	a := cfg.Admin
	if a.ConsoleTokenFile == "" {
		return a.ConsoleToken, nil
	}
	b, err := os.ReadFile(a.ConsoleTokenFile)
	if err != nil {
		return "", cfg.KeyError("admin.console_token_file", err)
	}
	tok := strings.TrimSpace(string(b))
	if err := config.CheckConsoleToken(tok); err != nil {
		return "", cfg.KeyError("admin.console_token_file", fmt.Errorf("%s: %v", a.ConsoleTokenFile, err))
	}
	return tok, nil
}

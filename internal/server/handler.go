package server

import (
	"github.com/mxguard/mxguard/internal/reply"
	"io"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/admit"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/smtpd"
	"github.com/mxguard/mxguard/internal/spool"
)

// connState is what the handler keeps per connection.
type connState struct {
	d       *admit.Decision
	cfg     *config.Config
	discard bool         // DISCARD matched: accept, deliver nothing
	fromErr *reply.Reply // delay_checks: a From: rejection held until RCPT
}

// handler applies mail policy (relaying, access map From:/To:) and puts
// accepted messages into the spool.
type handler struct{ s *Server }

var (
	replyRelayDenied = &reply.Reply{Code: 550, Status: "5.7.1", Text: "Relaying denied"}
	replyStorage     = &reply.Reply{Code: 452, Status: "4.3.1", Text: "Insufficient system storage"}
)

func state(s *smtpd.Session) *connState { return s.Value.(*connState) }

func (h *handler) Mail(s *smtpd.Session, from smtpd.Path, size int64) *reply.Reply {
	st := state(s)
	st.discard, st.fromErr = st.d.Discard, nil
	m := st.d.Policy.Access
	if m == nil || from.IsNull() {
		return nil
	}
	e, ok := m.LookupAddress("From", from.String())
	if !ok {
		return nil
	}
	act, err := accessmap.ParseAction(e.Value)
	if err != nil {
		return nil
	}
	switch act.Kind {
	case accessmap.Reject, accessmap.Error:
		r := admit.ReplyFromAction(act)
		h.s.log.Info("rejecting sender <"+from.String()+"> from "+clientName(s), "ip", s.Remote.Addr().String(), "reason", "access", "key", e.String())
		if st.cfg.DelayChecks {
			st.fromErr = r // sendmail's delay_checks: refuse at RCPT, unless a Spam: FRIEND says otherwise
			return nil
		}
		return r
	case accessmap.Discard:
		st.discard = true
	}
	return nil
}

func clientName(s *smtpd.Session) string { return admit.ClientName(s.Host, s.Remote.Addr()) }

// isLocal reports whether domain is one we accept mail for.
func isLocal(cfg *config.Config, domain string) bool {
	domain = strings.ToLower(domain)
	for _, d := range cfg.LocalDomains {
		if d == domain {
			return true
		}
	}
	return false
}

// rcptAddress is the address the spool keeps: domain in lower case, and
// the bare <Postmaster> of RFC 5321 4.5.1 given our first local domain.
func rcptAddress(cfg *config.Config, p smtpd.Path) string {
	if p.Domain == "" && len(cfg.LocalDomains) > 0 {
		return "postmaster@" + cfg.LocalDomains[0]
	}
	return p.Local + "@" + strings.ToLower(p.Domain)
}

func (h *handler) Rcpt(s *smtpd.Session, to smtpd.Path) *reply.Reply {
	st := state(s)
	cfg := st.cfg
	addr := rcptAddress(cfg, to)
	_, domain, _ := strings.Cut(addr, "@")
	m := st.d.Policy.Access
	var toAct *accessmap.Action
	var toKey string
	if m != nil {
		lookup := m.LookupAddress
		if !isLocal(cfg, domain) {
			lookup = m.LookupRemoteRecipient // sendmail skips "user@" for other domains
		}
		if e, ok := lookup("To", addr); ok {
			if act, err := accessmap.ParseAction(e.Value); err == nil {
				toAct, toKey = &act, e.String()
			}
		}
	}
	if st.fromErr != nil && !h.friend(m, addr) {
		return st.fromErr
	}
	if local, routing := isLocal(cfg, domain), hasRouting(to); !local || routing {
		mayRelay := st.d.Trusted || st.d.Relay || toAct != nil && toAct.Kind == accessmap.Relay
		switch {
		case !mayRelay,
			routing && !st.d.Trusted,           // routing tricks pass for trusted hosts only
			!local && cfg.Delivery.Relay == "": // without a relay, foreign mail has nowhere to go
			h.s.log.Info("relaying denied for <"+addr+"> from "+clientName(s), "ip", s.Remote.Addr().String(), "reason", "relay")
			return replyRelayDenied
		}
	}
	if md := h.s.maildir; md != nil {
		if _, err := md.Path(addr); err != nil {
			// A mailbox name that cannot be a directory: refuse it now
			// rather than bounce it later.
			return &reply.Reply{Code: 550, Status: "5.1.3", Text: "Bad destination mailbox address"}
		}
	}
	if toAct != nil {
		switch toAct.Kind {
		case accessmap.Reject, accessmap.Error:
			h.s.log.Info("rejecting recipient <"+addr+"> from "+clientName(s), "ip", s.Remote.Addr().String(), "reason", "access", "key", toKey)
			if toAct.Kind == accessmap.Reject {
				// sendmail's confRCPTREJ_MSG: it is the mailbox that is refused.
				return &reply.Reply{Code: 550, Status: "5.2.1", Text: "Mailbox disabled for this recipient"}
			}
			return admit.ReplyFromAction(*toAct)
		case accessmap.Discard:
			st.discard = true
		}
	}
	return nil
}

// friend reports a Spam: FRIEND entry for the recipient (sendmail's
// delay_checks `friend': the recipient wants mail the checks would refuse).
func (h *handler) friend(m *accessmap.Map, rcpt string) bool {
	if m == nil {
		return false
	}
	e, ok := m.LookupAddress("Spam", rcpt)
	if !ok {
		return false
	}
	act, err := accessmap.ParseAction(e.Value)
	return err == nil && act.Kind == accessmap.Friend
}

// hasRouting catches the old ways of making a local address relay:
// the percent hack (user%other@local), bang paths (other!user@local) and
// an '@' hidden in a quoted local part ("user@other"@local).
func hasRouting(p smtpd.Path) bool {
	return strings.ContainsAny(p.Local, "%!@")
}

func (h *handler) Data(s *smtpd.Session, r io.Reader) *reply.Reply {
	st := state(s)
	cfg := st.cfg
	if st.discard {
		io.Copy(io.Discard, r)
		h.s.log.Info("discarded message from "+clientName(s), "ip", s.Remote.Addr().String(), "reason", "access DISCARD")
		return &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok: discarded"}
	}
	env := &spool.Envelope{
		From:     s.From.String(),
		Received: time.Now(),
		ClientIP: s.Remote.Addr().String(),
		Helo:     s.Helo,
		SMTPUTF8: s.UTF8,
	}
	for _, p := range s.Rcpts {
		env.Rcpts = append(env.Rcpts, spool.Rcpt{Addr: rcptAddress(cfg, p)})
	}
	if h.s.maildir != nil {
		return h.store(s, env, r)
	}
	w, err := h.s.spool.Create(env)
	if err != nil {
		h.s.log.Error("spool: cannot create message", "err", err.Error())
		io.Copy(io.Discard, r)
		return replyStorage
	}
	bp := h.s.bufs.Get().(*[]byte)
	defer h.s.bufs.Put(bp)
	body := &readErr{r: r}
	_, err = io.WriteString(w, s.Received(cfg.Hostname, s.ID, env.Received))
	if err == nil {
		_, err = io.CopyBuffer(w, body, *bp)
	}
	if err != nil {
		w.Abort()
		if body.err == nil {
			h.s.log.Error("spool: cannot write message", "err", err.Error())
			io.Copy(io.Discard, r)
			return replyStorage
		}
		return nil // the body was refused or the client left; smtpd replies
	}
	id, err := w.Commit()
	if err != nil {
		h.s.log.Error("spool: cannot commit message", "err", err.Error())
		return replyStorage
	}
	h.s.queue.Enqueue(id)
	h.s.log.Info("accepted", "id", id, "ip", s.Remote.Addr().String(), "from", env.From, "rcpts", len(env.Rcpts), "size", env.Size)
	return &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok: queued as " + id}
}

// store delivers a message for local recipients straight into their
// Maildirs before the 250 (deliver.Maildir.Store says why).
func (h *handler) store(s *smtpd.Session, env *spool.Envelope, r io.Reader) *reply.Reply {
	env.ID = h.s.spool.NewID()
	body := &readErr{r: r}
	received := s.Received(state(s).cfg.Hostname, s.ID, env.Received)
	name, err := h.s.maildir.Store(env, io.MultiReader(strings.NewReader(received), body))
	if err != nil {
		if body.err != nil {
			return nil // the body was refused or the client left; smtpd replies
		}
		h.s.log.Error("maildir: cannot store message", "id", env.ID, "err", err.Error())
		io.Copy(io.Discard, r)
		return replyStorage
	}
	h.s.log.Info("accepted", "id", env.ID, "ip", s.Remote.Addr().String(), "from", env.From, "rcpts", len(env.Rcpts))
	for _, rc := range env.Rcpts {
		h.s.log.Info("delivered", "id", env.ID, "rcpt", rc.Addr, "via", "maildir", "file", name)
	}
	return &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok: queued as " + env.ID}
}

// readErr remembers a read error, to tell a refused body or a vanished
// client (smtpd replies) from a spool write error (we reply 452).
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

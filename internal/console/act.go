package console

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/control"
)

// result is an action's outcome, shown on the page a form gets back.
type result struct {
	OK   bool
	Text string
}

// Bounds of a request that changes state.
const (
	maxForm = 4 << 10 // a form's body: an action, a prefix and a token
	minBan  = time.Minute
	maxBan  = 365 * 24 * time.Hour
)

// act carries out one action: POST /console/act with the token and
// do=<action>, one of
//
//	check               (only checks the token)
//	deny <ip|prefix>
//	trust <ip|prefix>
//	ban <duration> <ip|prefix>
//	unban <ip|prefix>
//
// CrossOriginProtection has refused it already if it came from another
// site's page.
func (c *Console) act(w http.ResponseWriter, r *http.Request) {
	tok, err := c.cfg.Token()
	if err != nil {
		c.cfg.Log.Error("console: cannot read the token", "err", err.Error())
		c.refuse(w, r, http.StatusInternalServerError, "the console's token cannot be read: the server's log says why")
		return
	}
	if tok == "" {
		c.refuse(w, r, http.StatusForbidden, "the console is read-only: set [admin] console_token_file (or console_token) to act from it")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		c.refuse(w, r, http.StatusBadRequest, "the form cannot be read: "+err.Error())
		return
	}
	// From the body or a header only: a token in the URL would be
	// written into logs and histories.
	given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		given = r.PostForm.Get("token")
	}
	if !sameToken(given, tok) {
		why := "wrong token"
		if given == "" {
			why = "no token"
		}
		c.refuse(w, r, http.StatusForbidden, why+": a state change needs the console's token")
		return
	}
	cmd := r.PostForm.Get("do")
	msg, err := c.do(cmd)
	if err != nil {
		c.cfg.Log.Info("console command failed", "command", clip(cmd), "from", r.RemoteAddr, "err", err.Error())
		c.reply(w, r, http.StatusBadRequest, result{Text: err.Error()})
		return
	}
	c.invalidate()
	c.cfg.Log.Info("console command", "command", cmd, "from", r.RemoteAddr, "result", msg)
	c.reply(w, r, http.StatusOK, result{OK: true, Text: msg})
}

// sameToken compares in constant time, whatever the lengths: the hashes
// are compared, not the tokens.
func sameToken(given, want string) bool {
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return given != "" && subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// do parses and carries out one action.
func (c *Console) do(cmd string) (string, error) {
	f := strings.Fields(cmd)
	if len(f) == 0 {
		return "", errors.New("no action given (do=deny|trust|unban <ip|prefix>, or ban <duration> <ip|prefix>)")
	}
	srv := c.cfg.Server
	switch {
	case f[0] == "check" && len(f) == 1:
		return "the token is right", nil
	case (f[0] == "deny" || f[0] == "trust" || f[0] == "unban") && len(f) == 2:
		p, err := control.ParsePrefix(f[1])
		if err != nil {
			return "", err
		}
		switch f[0] {
		case "deny":
			return srv.Deny(p)
		case "trust":
			return srv.Trust(p)
		}
		return srv.Unban(p)
	case f[0] == "ban" && len(f) == 3:
		d, err := config.ParseDuration(f[1])
		if err != nil {
			return "", fmt.Errorf("ban: %v", err)
		}
		if d < minBan || d > maxBan {
			return "", fmt.Errorf("ban: %s is not between %s and %s", f[1], config.FormatDuration(minBan), config.FormatDuration(maxBan))
		}
		p, err := control.ParsePrefix(f[2])
		if err != nil {
			return "", err
		}
		return srv.Ban(p, d)
	}
	return "", fmt.Errorf("unknown action %q (do=deny|trust|unban <ip|prefix>, or ban <duration> <ip|prefix>)", clip(cmd))
}

// refuse answers a state change that may not be made, and logs it: a
// stream of these is someone trying tokens or forging requests.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, code int, why string) {
	c.cfg.Log.Warn("console: state change refused", "from", r.RemoteAddr, "why", why)
	c.reply(w, r, code, result{Text: why})
}

// reply answers an action: a page to a form sent without JavaScript (it
// accepts HTML), a line of text to the page's script and to scripts.
func (c *Console) reply(w http.ResponseWriter, r *http.Request, code int, res result) {
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(code)
		if err := c.tmpl.ExecuteTemplate(w, "result", res); err != nil {
			c.cfg.Log.Warn("console: rendering a result", "err", err.Error())
		}
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	state := "ERR"
	if res.OK {
		state = "OK"
	}
	fmt.Fprintf(w, "%s %s\n", state, strings.ReplaceAll(res.Text, "\n", "; "))
}

// clip shortens what a request sent for a log line or a reply.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

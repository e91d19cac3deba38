package accessmap

import (
	"errors"
	"fmt"
	"github.com/mxguard/mxguard/internal/reply"
	"strconv"
	"strings"
)

// Kind is what an access map value tells the server to do.
type Kind int

// The values an access map entry can take. The zero Kind is not one of them,
// so that a zero Action is never mistaken for OK.
const (
	OK         Kind = iota + 1 // accept, even if a later check would refuse; not a licence to relay
	Relay                      // accept and allow relaying; implies OK
	Reject                     // refuse with sendmail's generic message
	Discard                    // accept and throw the message away
	Skip                       // stop this stage of the search as if nothing matched
	Error                      // refuse with the entry's own reply
	Quarantine                 // accept and hold the message, for the entry's reason
	Friend                     // Spam: the recipient wants all mail (delay_checks friend)
	Hater                      // Spam: the recipient wants spam checks (delay_checks hater)
)

// String returns the keyword sendmail uses for k.
func (k Kind) String() string {
	switch k {
	case OK:
		return "OK"
	case Relay:
		return "RELAY"
	case Reject:
		return "REJECT"
	case Discard:
		return "DISCARD"
	case Skip:
		return "SKIP"
	case Error:
		return "ERROR"
	case Quarantine:
		return "QUARANTINE"
	case Friend:
		return "FRIEND"
	case Hater:
		return "HATER"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Action is a parsed access map value.
//
// For Reject, Code, Status and Text hold the reply sendmail's check_relay and
// check_mail give: 550 5.7.1 Access denied. For Error they hold the entry's
// own reply; when the entry names no enhanced status code, Status is X.0.0
// with X the class of Code (sendmail would send 5.0.0 even after a 4xx code,
// which its cf/README calls wrong). For Quarantine, Text is the reason.
type Action struct {
	Kind   Kind
	Code   int
	Status string
	Text   string
}

// Reply returns the SMTP reply for a refusal ("550 5.7.1 Access denied"),
// or nil for a kind that refuses nothing.
func (a Action) Reply() *reply.Reply {
	if a.Kind != Reject && a.Kind != Error {
		return nil
	}
	return &reply.Reply{Code: a.Code, Status: a.Status, Text: a.Text}
}

// RecipientReply is Reply for a refusal found with the To: tag: there
// sendmail answers REJECT with "550 5.2.1 Mailbox disabled for this
// recipient" (its confRCPTREJ_MSG default), since it is the mailbox, not the
// client, that is refused.
func (a Action) RecipientReply() *reply.Reply {
	if a.Kind == Reject {
		return &reply.Reply{Code: 550, Status: "5.2.1", Text: "Mailbox disabled for this recipient"}
	}
	return a.Reply()
}

// ParseAction parses an access map value: OK, RELAY, REJECT, DISCARD, SKIP,
// FRIEND, HATER (any case), QUARANTINE:reason, or an error reply in one of
// sendmail's forms:
//
//	ERROR:550 text          ERROR:"550 text"
//	ERROR:5.7.1:550 text    ERROR:5.7.1:"550 text"
//	550 text                "550 text"  (deprecated by sendmail, still read)
//
// It does not allocate for a valid value, so a lookup on the hot path may
// call it.
func ParseAction(v string) (Action, error) {
	v = strings.TrimSpace(v)
	for _, k := range [...]Kind{OK, Relay, Discard, Skip, Friend, Hater} {
		if strings.EqualFold(v, k.String()) {
			return Action{Kind: k}, nil
		}
	}
	switch {
	case strings.EqualFold(v, "REJECT"):
		return Action{Kind: Reject, Code: 550, Status: "5.7.1", Text: "Access denied"}, nil
	case hasPrefixFold(v, "ERROR:"):
		return parseError(v[len("ERROR:"):])
	case hasPrefixFold(v, "QUARANTINE:"):
		reason := unquote(strings.TrimSpace(v[len("QUARANTINE:"):]))
		if reason == "" {
			return Action{}, errors.New("QUARANTINE: needs a reason")
		}
		if err := checkText(reason); err != nil {
			return Action{}, err
		}
		return Action{Kind: Quarantine, Text: reason}, nil
	case v != "" && (isDigit(v[0]) || v[0] == '"'):
		a, err := parseReply(unquote(v), "")
		if err != nil {
			return Action{}, fmt.Errorf("%q is neither a keyword nor a reply: %w", v, err)
		}
		return a, nil
	}
	return Action{}, fmt.Errorf("unknown action %q (want OK, RELAY, REJECT, DISCARD, SKIP, ERROR:..., QUARANTINE:..., FRIEND or HATER)", v)
}

// deprecatedReply reports whether v is a bare "### text" reply, which sendmail
// still honours but tells administrators to write as ERROR:### text.
func deprecatedReply(v string) bool {
	v = strings.TrimSpace(v)
	return v != "" && (isDigit(v[0]) || v[0] == '"')
}

// parseError parses what follows "ERROR:": an optional D.S.N: status, then a
// reply code and text, either possibly quoted.
func parseError(s string) (Action, error) {
	status, s := cutStatus(strings.TrimSpace(s))
	s = unquote(s)
	if status == "" {
		// ERROR:"5.7.1:550 text", the quote placed before the status.
		status, s = cutStatus(s)
	}
	return parseReply(s, status)
}

// cutStatus splits a leading "D.S.N:" off s.
func cutStatus(s string) (status, rest string) {
	if n := statusLen(s); n > 0 && n < len(s) && s[n] == ':' {
		return s[:n], strings.TrimSpace(s[n+1:])
	}
	return "", s
}

// parseReply parses "### text" with an optional enhanced status code.
func parseReply(s, status string) (Action, error) {
	if len(s) < 3 || !isDigit(s[0]) || !isDigit(s[1]) || !isDigit(s[2]) || (len(s) > 3 && s[3] != ' ' && s[3] != '\t') {
		return Action{}, fmt.Errorf("error reply %q must start with a three-digit code", s)
	}
	code := int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0')
	if code < 400 || code > 599 {
		return Action{}, fmt.Errorf("error reply code %d is not 4xx or 5xx", code)
	}
	text := strings.TrimSpace(s[3:])
	if err := checkText(text); err != nil {
		return Action{}, err
	}
	if status == "" {
		// "550 5.7.1 text": sendmail takes a status code at the start of
		// the text as the reply's own (isenhsc in its err.c).
		if n := statusLen(text); n > 0 && (n == len(text) || text[n] == ' ') {
			status, text = text[:n], strings.TrimSpace(text[n:])
		}
	}
	if status == "" {
		status = "5.0.0"
		if code < 500 {
			status = "4.0.0"
		}
	} else if status[0] != '4' && status[0] != '5' {
		return Action{}, fmt.Errorf("enhanced status code %s is not of class 4 or 5", status)
	}
	return Action{Kind: Error, Code: code, Status: status, Text: text}, nil
}

// statusLen returns the length of the RFC 3463 status code (class "."
// subject "." detail, one digit then up to three and three) at the start of
// s, or 0 if there is none.
func statusLen(s string) int {
	if len(s) < 5 || !isDigit(s[0]) || s[1] != '.' {
		return 0
	}
	i := 2
	for part := 0; part < 2; part++ {
		j := i
		for j < len(s) && j-i < 3 && isDigit(s[j]) {
			j++
		}
		if j == i {
			return 0
		}
		if part == 0 {
			if j == len(s) || s[j] != '.' {
				return 0
			}
			j++
		}
		i = j
	}
	if i < len(s) && isDigit(s[i]) {
		return 0 // a fourth digit: not a status code
	}
	return i
}

// checkText refuses control characters: the text goes into an SMTP reply,
// where a CR or LF would end the line early and let the file inject a reply.
func checkText(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return fmt.Errorf("reply text has control character %#02x", c)
		}
	}
	return nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Package reply is the SMTP reply: a code, an RFC 3463 enhanced status code
// and text, and its rendering on the wire. It is a leaf shared by the
// protocol (internal/smtpd), admission (internal/admit) and the envelope
// policy (internal/policy), so that a decision made outside the protocol
// loop is handed to it as the reply it will send, not as a string to parse.
package reply

import (
	"strconv"
	"strings"
)

// Reply is one SMTP reply. Multi-line text is separated by "\n".
type Reply struct {
	Code   int
	Status string // enhanced status code, e.g. "5.7.1"; "" for none (greeting, 354)
	Text   string
}

// String renders the reply as it goes on the wire, without the final CRLF.
func (r *Reply) String() string {
	return strings.TrimSuffix(string(r.AppendTo(nil)), "\r\n")
}

// Temporary reports whether the reply is a 4xx.
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Failed reports whether the reply is 4xx or 5xx.
func (r *Reply) Failed() bool { return r.Code >= 400 }

// MaxLine is RFC 5321 4.5.3.1.5's limit for a reply line, CRLF included.
const MaxLine = 512

// AppendTo renders the reply onto b. A line that would exceed MaxLine is
// cut: some texts echo what the client sent (an unknown MAIL parameter may
// be nearly a whole command line long) and some come from the access map,
// and a client may drop a connection whose reply lines break the limit.
func (r *Reply) AppendTo(b []byte) []byte {
	// Line by line with Cut rather than Split: a refusal under a flood
	// is rendered once per connection, and Split allocates its slice.
	for rest, more := r.Text, true; more; {
		var l string
		l, rest, more = strings.Cut(rest, "\n")
		start := len(b)
		b = strconv.AppendInt(b, int64(r.Code), 10)
		sep := byte(' ')
		if more {
			sep = '-'
		}
		// RFC 5321's Reply-line: the text (with our status code in front)
		// is optional, and no blank follows the code without it.
		switch {
		case r.Status != "":
			b = append(b, sep)
			b = append(b, r.Status...)
			if l != "" {
				b = append(b, ' ')
			}
		case l != "" || sep == '-':
			b = append(b, sep)
		}
		if room := MaxLine - 2 - (len(b) - start); len(l) > room {
			l = l[:max(room, 0)]
		}
		b = append(b, l...)
		b = append(b, '\r', '\n')
	}
	return b
}

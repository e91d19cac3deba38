package smtpd

import (
	"fmt"
	"strconv"
	"strings"
)

// Reply is one SMTP reply: a code, an RFC 3463 enhanced status code and text.
// Multi-line text is separated by "\n".
type Reply struct {
	Code   int
	Status string // enhanced status code, e.g. "5.7.1"; "" for none (greeting, 354)
	Text   string
}

// Errorf makes a Reply with formatted text.
func Errorf(code int, status, format string, args ...any) *Reply {
	return &Reply{Code: code, Status: status, Text: fmt.Sprintf(format, args...)}
}

// String renders the reply as it goes on the wire, without the final CRLF.
func (r *Reply) String() string {
	return strings.TrimSuffix(string(r.appendTo(nil)), "\r\n")
}

// Temporary reports whether the reply is a 4xx.
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Failed reports whether the reply is 4xx or 5xx.
func (r *Reply) Failed() bool { return r.Code >= 400 }

// maxReplyLine is RFC 5321 4.5.3.1.5's limit for a reply line, CRLF
// included.
const maxReplyLine = 512

// appendTo renders the reply. A line that would exceed maxReplyLine is
// cut: some texts echo what the client sent (an unknown MAIL parameter may
// be nearly a whole command line long) and some come from the access map,
// and a client may drop a connection whose reply lines break the limit.
func (r *Reply) appendTo(b []byte) []byte {
	lines := strings.Split(r.Text, "\n")
	for i, l := range lines {
		start := len(b)
		b = strconv.AppendInt(b, int64(r.Code), 10)
		if i < len(lines)-1 {
			b = append(b, '-')
		} else {
			b = append(b, ' ')
		}
		if r.Status != "" {
			b = append(b, r.Status...)
			b = append(b, ' ')
		}
		if room := maxReplyLine - 2 - (len(b) - start); len(l) > room {
			l = l[:max(room, 0)]
		}
		b = append(b, l...)
		b = append(b, '\r', '\n')
	}
	return b
}

// Replies the protocol layer gives on its own. Texts follow RFC 5321 and,
// where it defines them, sendmail or Postfix.
var (
	replyOK          = &Reply{250, "2.0.0", "Ok"}
	replyNeedHelo    = &Reply{503, "5.5.1", "Error: send HELO/EHLO first"}
	replyNestedMail  = &Reply{503, "5.5.1", "Error: nested MAIL command"}
	replyNeedMail    = &Reply{503, "5.5.1", "Error: need MAIL command"}
	replyNeedRcpt    = &Reply{503, "5.5.1", "Error: need RCPT command"}
	replyUnknown     = &Reply{500, "5.5.2", "Error: command not recognized"}
	replyLineTooLong = &Reply{500, "5.5.2", "Line too long"}
	replyBareLFCmd   = &Reply{500, "5.5.2", "Error: bare <LF> received"}
	replyNULCmd      = &Reply{500, "5.5.2", "Error: NUL octet in command"}
	replyNonASCIICmd = &Reply{500, "5.5.2", "Error: non-ASCII octet in command"}
	replyTooMany     = &Reply{452, "4.5.3", "Too many recipients"}
	replyTooBig      = &Reply{552, "5.3.4", "Message size exceeds fixed maximum message size"}
	replyBareLF      = &Reply{550, "5.5.2", "Message refused: bare <LF> received (see RFC 5321 section 2.3.8)"}
	replyBareCR      = &Reply{550, "5.5.2", "Message refused: bare <CR> received (see RFC 5321 section 2.3.8)"}
	replyNULData     = &Reply{550, "5.6.0", "Message refused: NUL octet in message"}
	replyLongData    = &Reply{500, "5.5.2", "Line too long"}
	replyVRFY        = &Reply{252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"}
	replyEXPN        = &Reply{502, "5.5.1", "EXPN not available"}
	replyNoTLS       = &Reply{502, "5.5.1", "Error: STARTTLS not available"}
	replyTLSAgain    = &Reply{503, "5.5.1", "Error: TLS already active"}
	replyTLSReady    = &Reply{220, "2.0.0", "Ready to start TLS"}
	replyData        = &Reply{354, "", "End data with <CR><LF>.<CR><LF>"}
	replyNoParams    = &Reply{501, "5.5.4", "Syntax error in parameters or arguments"}
	replyHelp        = &Reply{214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS\nSee RFC 5321"}
	replyTooManyErrs = &Reply{421, "4.7.0", "Error: too many errors"}
	replyNotSMTP     = &Reply{221, "2.7.0", "Error: I can break rules, too. Goodbye."}
)

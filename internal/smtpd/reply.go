package smtpd

import "github.com/mxguard/mxguard/internal/reply"

// Replies the protocol layer gives on its own. Texts follow RFC 5321 and,
// where it defines them, sendmail or Postfix.
var (
	replyOK          = &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok"}
	replyNeedHelo    = &reply.Reply{Code: 503, Status: "5.5.1", Text: "Error: send HELO/EHLO first"}
	replyNestedMail  = &reply.Reply{Code: 503, Status: "5.5.1", Text: "Error: nested MAIL command"}
	replyNeedMail    = &reply.Reply{Code: 503, Status: "5.5.1", Text: "Error: need MAIL command"}
	replyNeedRcpt    = &reply.Reply{Code: 503, Status: "5.5.1", Text: "Error: need RCPT command"}
	replyUnknown     = &reply.Reply{Code: 500, Status: "5.5.2", Text: "Error: command not recognized"}
	replyLineTooLong = &reply.Reply{Code: 500, Status: "5.5.2", Text: "Line too long"}
	replyBareLFCmd   = &reply.Reply{Code: 500, Status: "5.5.2", Text: "Error: bare <LF> received"}
	replyNULCmd      = &reply.Reply{Code: 500, Status: "5.5.2", Text: "Error: NUL octet in command"}
	replyNonASCIICmd = &reply.Reply{Code: 500, Status: "5.5.2", Text: "Error: non-ASCII octet in command"}
	replyTooMany     = &reply.Reply{Code: 452, Status: "4.5.3", Text: "Too many recipients"}
	replyTooBig      = &reply.Reply{Code: 552, Status: "5.3.4", Text: "Message size exceeds fixed maximum message size"}
	replyBareLF      = &reply.Reply{Code: 550, Status: "5.5.2", Text: "Message refused: bare <LF> received (see RFC 5321 section 2.3.8)"}
	replyBareCR      = &reply.Reply{Code: 550, Status: "5.5.2", Text: "Message refused: bare <CR> received (see RFC 5321 section 2.3.8)"}
	replyNULData     = &reply.Reply{Code: 550, Status: "5.6.0", Text: "Message refused: NUL octet in message"}
	replyLongData    = &reply.Reply{Code: 500, Status: "5.5.2", Text: "Line too long"}
	replyVRFY        = &reply.Reply{Code: 252, Status: "2.5.2", Text: "Cannot VRFY user, but will accept message and attempt delivery"}
	replyEXPN        = &reply.Reply{Code: 502, Status: "5.5.1", Text: "EXPN not available"}
	replyNoTLS       = &reply.Reply{Code: 502, Status: "5.5.1", Text: "Error: STARTTLS not available"}
	replyTLSAgain    = &reply.Reply{Code: 503, Status: "5.5.1", Text: "Error: TLS already active"}
	replyTLSReady    = &reply.Reply{Code: 220, Status: "2.0.0", Text: "Ready to start TLS"}
	replyData        = &reply.Reply{Code: 354, Status: "", Text: "End data with <CR><LF>.<CR><LF>"}
	replyNoParams    = &reply.Reply{Code: 501, Status: "5.5.4", Text: "Syntax error in parameters or arguments"}
	replyHelp        = &reply.Reply{Code: 214, Status: "2.0.0", Text: "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS\nSee RFC 5321"}
	replyTooManyErrs = &reply.Reply{Code: 421, Status: "4.7.0", Text: "Error: too many errors"}
	replyPipelining  = &reply.Reply{Code: 554, Status: "5.5.0", Text: "Error: SMTP protocol synchronization"}
	replyNotSMTP     = &reply.Reply{Code: 221, Status: "2.7.0", Text: "Error: I can break rules, too. Goodbye."}
)

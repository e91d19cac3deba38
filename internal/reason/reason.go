// Package reason is mxguard's one vocabulary of outcomes: every reason for
// which a connection, a command or a message is refused, cut off, stalled
// or turned aside, as a typed constant with a stable lower-case snake_case
// name. Log lines carry it as reason=, metrics as a label value, and the
// control socket and the transcripts use the same names, so that an
// operator greps, bans and graphs one word per cause. The list is the
// contract: docs/SPEC.md's table of reasons is generated from it (a test
// holds it there), and a name, once published, is not renamed.
package reason

// Reason names one cause. Its string is the name used everywhere.
type Reason string

// String returns the name.
func (r Reason) String() string { return string(r) }

// Stage is where in a connection's life a reason applies.
type Stage string

// The stages, in the order of a connection's life.
const (
	StageConnect Stage = "connect" // admission, before the greeting
	StageGreet   Stage = "greet"   // the greeting pause
	StageCommand Stage = "command" // any command of the session
	StageMail    Stage = "mail"    // MAIL FROM
	StageRcpt    Stage = "rcpt"    // RCPT TO
	StageData    Stage = "data"    // the message body
	StageDeliver Stage = "deliver" // delivery after the 250
)

// Reasons of admission (internal/admit) and of the PROXY protocol header
// read before it (internal/server).
const (
	ProxyProtocol     Reason = "proxy_protocol"
	MaxDaemonChildren Reason = "max_daemon_children"
	DenyList          Reason = "deny_list"
	Banned            Reason = "banned"
	Throttle          Reason = "throttle"
	TCPWrappers       Reason = "tcpwrappers"
	Access            Reason = "access"
	RateControl       Reason = "ratecontrol"
	ConnControl       Reason = "conncontrol"
	Limiter           Reason = "limiter"
	Shutdown          Reason = "shutdown"
	DNSBL             Reason = "dnsbl"
	DNSBLRcpt         Reason = "dnsbl_rcpt"
)

// Reasons of the greeting and the protocol (internal/smtpd).
const (
	Pregreet          Reason = "pregreet"
	TooManyErrors     Reason = "too_many_errors"
	LineTooLong       Reason = "line_too_long"
	BareLF            Reason = "bare_lf"
	BareCR            Reason = "bare_cr"
	NUL               Reason = "nul"
	NonASCII          Reason = "non_ascii"
	NonSMTP           Reason = "non_smtp"
	Pipelining        Reason = "pipelining"
	StartTLSInjection Reason = "starttls_injection"
	TLS               Reason = "tls"
	SessionBytes      Reason = "session_bytes"
	SessionTime       Reason = "session_time"
	TooBig            Reason = "too_big"
	TooManyRcpts      Reason = "too_many_rcpts"
	BadRcptThrottle   Reason = "bad_rcpt_throttle"
	TooManyBadRcpts   Reason = "too_many_bad_rcpts"

	TimeoutHelo      Reason = "timeout_helo"
	TimeoutMail      Reason = "timeout_mail"
	TimeoutRcpt      Reason = "timeout_rcpt"
	TimeoutDataInit  Reason = "timeout_datainit"
	TimeoutDataBlock Reason = "timeout_datablock"
	TimeoutDataFinal Reason = "timeout_datafinal"
	TimeoutRset      Reason = "timeout_rset"
	TimeoutQuit      Reason = "timeout_quit"
	TimeoutMisc      Reason = "timeout_misc"
	TimeoutStartTLS  Reason = "timeout_starttls"
)

// Reasons of the envelope policy and of storage.
const (
	RelayDenied Reason = "relay_denied"
	UnknownUser Reason = "unknown_user"
	Unverified  Reason = "unverified"
	BadMailbox  Reason = "bad_mailbox"
	Discard     Reason = "discard"
	Storage     Reason = "storage"
)

// Reasons of delivery and of the operator.
const (
	QueueLifetime Reason = "queue_lifetime"
	Control       Reason = "control"
)

// Info describes one reason for the documentation.
type Info struct {
	Reason Reason
	Stage  Stage
	Doc    string
}

// table is the vocabulary with its documentation, in the order of a
// connection's life. It is read-only.
var table = []Info{
	{ProxyProtocol, StageConnect, "a PROXY protocol header missing, malformed, too long or late from a proxy_protocol_from source, or sent by any other client: closed"},
	{MaxDaemonChildren, StageConnect, "max_daemon_children connections are open: 421, closed"},
	{DenyList, StageConnect, "the client is in the deny list of `mxguard deny`: 550, closed"},
	{Banned, StageConnect, "the client is banned for its score (reputation), until the ban expires or `mxguard trust`: 554, closed"},
	{Throttle, StageConnect, "connection_rate_throttle stalled the connection to a later second (not a refusal)"},
	{TCPWrappers, StageConnect, "hosts.deny (or hosts.allow) refused the client: 550, closed"},
	{Access, StageConnect, "an access-map entry (Connect:, From:, To:) refused the client, sender or recipient"},
	{RateControl, StageConnect, "ClientRate: the client opened too many connections in the window"},
	{ConnControl, StageConnect, "ClientConn: the client has too many connections open"},
	{Limiter, StageConnect, "the shared limit store is unreachable and on_redis_error = \"tempfail\": 421"},
	{Shutdown, StageConnect, "the server is stopping: 421"},
	{Pregreet, StageGreet, "the client talked before the greeting: 554, closed"},
	{DNSBL, StageGreet, "DNS blocklists score the client at or over dnsbl.threshold, with action reject (or under stress): 554 (521 under stress) instead of the greeting, closed"},
	{TooManyErrors, StageCommand, "too many protocol errors in the session: 421, closed"},
	{LineTooLong, StageCommand, "a command line over 512 octets (500), or over 4 KiB (500, closed), or a message line over 1000 octets"},
	{BareLF, StageCommand, "a bare LF in a command or in the message: refused (SMTP smuggling)"},
	{BareCR, StageCommand, "a bare CR in a command or in the message: refused (SMTP smuggling)"},
	{NUL, StageCommand, "a NUL octet in a command or in the message"},
	{NonASCII, StageCommand, "a non-ASCII octet in a command that allows none"},
	{NonSMTP, StageCommand, "an HTTP or proxy verb (GET, POST, CONNECT, USER...): closed"},
	{Pipelining, StageCommand, "commands sent ahead where RFC 2920 forbids it (with EHLO, HELO, DATA, NOOP, VRFY, EXPN, or in a session without PIPELINING): 554 5.5.0, closed"},
	{StartTLSInjection, StageCommand, "plaintext pipelined after STARTTLS, discarded (CVE-2011-0411)"},
	{TLS, StageCommand, "the TLS handshake failed: closed"},
	{SessionBytes, StageCommand, "the session passed max_session_bytes: 421, closed"},
	{SessionTime, StageCommand, "the session passed max_session_time: 421, closed"},
	{TimeoutHelo, StageCommand, "timeouts.helo passed waiting for the first command: 421, closed"},
	{TimeoutMail, StageCommand, "timeouts.mail passed waiting for MAIL: 421, closed"},
	{TimeoutRcpt, StageCommand, "timeouts.rcpt passed waiting after MAIL: 421, closed"},
	{TimeoutDataInit, StageCommand, "timeouts.datainit passed waiting for DATA: 421, closed"},
	{TimeoutDataBlock, StageData, "timeouts.datablock passed waiting for message data: 421, closed"},
	{TimeoutDataFinal, StageData, "timeouts.datafinal passed before the final dot: 421, closed"},
	{TimeoutRset, StageCommand, "timeouts.rset passed waiting after RSET: 421, closed"},
	{TimeoutQuit, StageCommand, "timeouts.quit passed waiting after a message: 421, closed"},
	{TimeoutMisc, StageCommand, "timeouts.misc passed waiting after NOOP, VRFY, HELP: 421, closed"},
	{TimeoutStartTLS, StageCommand, "timeouts.starttls passed in the TLS handshake: closed"},
	{DNSBLRcpt, StageRcpt, "DNS blocklists score the client at or over dnsbl.threshold, with action reject_rcpt: 550 5.7.1 to each RCPT"},
	{RelayDenied, StageRcpt, "a recipient outside the local domains from a client that may not relay: 550 5.7.1"},
	{UnknownUser, StageRcpt, "a recipient of a local domain that does not exist: 550 5.1.1"},
	{Unverified, StageRcpt, "the downstream could not verify the recipient in time: 450 4.1.1"},
	{BadMailbox, StageRcpt, "a local part that cannot be a mailbox name: 550 5.1.3"},
	{BadRcptThrottle, StageRcpt, "bad_rcpt_throttle refused recipients reached: each further RCPT waits 1 s"},
	{TooManyBadRcpts, StageRcpt, "max_bad_rcpts refused recipients in the session: 421, closed"},
	{TooManyRcpts, StageRcpt, "max_rcpts_per_message reached: 452 4.5.3"},
	{TooBig, StageData, "the message is larger than max_message_size: 552 5.3.4"},
	{Discard, StageData, "an access-map DISCARD: accepted and dropped"},
	{Storage, StageData, "the message could not be made durable: 452 4.3.1"},
	{QueueLifetime, StageDeliver, "delivery was retried for queue_lifetime: bounced"},
	{Control, StageDeliver, "an operator's command on the control socket"},
}

// All returns every reason with its stage and documentation, in the order
// of a connection's life.
func All() []Info { return append([]Info(nil), table...) }

// ByPhase returns the timeout reason of a protocol phase named as in
// [timeouts] ("helo", "datablock"...), and whether there is one.
func ByPhase(phase string) (Reason, bool) {
	r := Reason("timeout_" + phase)
	for _, i := range table {
		if i.Reason == r {
			return r, true
		}
	}
	return "", false
}

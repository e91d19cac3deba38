package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/limit"
)

// Key is one configuration key, declared once: its name, its default, the
// check of a value and its line of documentation. The parser, Default, the
// key tables of docs/SPEC.md and the test of testdata/full.toml all derive
// from Keys, so that a key cannot be documented with one default and
// applied with another.
type Key struct {
	Name string // dotted: "hostname", "limits.client_rate"
	// Default is the TOML value an absent key means (string, int64, bool
	// or []any of strings), applied through the same setter as a value
	// from a file. nil when the default is computed; Computed says how.
	Default  any
	Computed string
	Doc      string // one line: what the key means
	Sendmail string // the sendmail option it stands for, "" if none
	// Unused, when set, marks a key accepted so that a configuration
	// translated from sendmail loads, but that has no effect in mxguard;
	// setting it logs this text as a warning.
	Unused string
	// Path says what a path-valued key must name on disk (checked by
	// CheckPaths, not by the parser, which reads no files).
	Path PathKind
	// ServerPhase marks a timeout of a server-side phase: 0 there means
	// "as timeouts.command".
	ServerPhase bool
	// RelayDefault, for a timeout, is what the relay client waits when
	// the key is 0: RFC 5321 4.5.3.2's minimum where it names one. ""
	// when the relay client has no such wait.
	RelayDefault string

	set setter
	dur func(*Config) *time.Duration // timeouts: the field the key sets
	str func(*Config) *string        // paths: the field the key sets
}

// pathKey completes a key whose value is a path.
func pathKey(k Key, field func(*Config) *string) Key {
	k.str, k.set = field, pathVal(field, k.Path != Directory)
	return k
}

// timeoutKey completes a [timeouts] key. min is the shortest value allowed
// (0: "0s" allowed, meaning "as command" on the server side).
func timeoutKey(k Key, field func(*Config) *time.Duration, min time.Duration) Key {
	k.dur = field
	if min > 0 {
		k.set = durationVal(field, min)
	} else {
		k.set = timeoutVal(field)
	}
	return k
}

// PathKind is what a path-valued key must name.
type PathKind int

// Kinds of path.
const (
	NotPath      PathKind = iota
	RegularFile           // must exist and be a regular file (access map, certificate)
	OptionalFile          // may be absent; if present, a regular file (trust and deny lists)
	Directory             // may be absent (created); if present, a directory
	Socket                // may be absent; if present, a Unix socket (ours, left by a crash)
)

// Section returns the table the key lives in ("" for the top level) and its
// name within it.
func (k *Key) Section() (section, name string) {
	if i := strings.IndexByte(k.Name, '.'); i >= 0 {
		return k.Name[:i], k.Name[i+1:]
	}
	return "", k.Name
}

// DefaultText is the default as the documentation writes it: a TOML
// literal, or the description of a computed default.
func (k *Key) DefaultText() string {
	if k.Default == nil {
		return k.Computed
	}
	return tomlLiteral(k.Default)
}

func tomlLiteral(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case bool:
		return strconv.FormatBool(v)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = tomlLiteral(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	panic(fmt.Sprintf("config: default of type %T", v))
}

// Sections are the tables of the file, in the order the documentation
// shows them; "" is the top level.
var Sections = []string{"", "limits", "timeouts", "recipients", "delivery", "reputation", "dnsbl", "stress", "fleet", "admin"}

// Keys returns every configuration key, in documentation order.
func Keys() []Key { return append([]Key(nil), schema...) }

func strs(s ...string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// schema is the list behind Keys. It is read-only after initialisation.
var schema = []Key{
	{Name: "hostname", Computed: "the OS host name", Doc: "name in the greeting and replies",
		set: stringVal(func(c *Config) *string { return &c.Hostname }, checkHostname)},
	{Name: "listen", Default: strs("127.0.0.1:2525"), Doc: "addresses to listen on (host:port; \":25\" is every address)",
		set: setListen},
	pathKey(Key{Name: "data_dir", Default: "./data", Doc: "spool, state files and the default Maildir root", Path: Directory},
		func(c *Config) *string { return &c.DataDir }),
	{Name: "local_domains", Default: strs("localhost"), Doc: "domains we accept mail for",
		set: setLocalDomains},
	{Name: "trusted_networks", Default: strs("127.0.0.0/8", "::1/128"), Doc: "never limited; may relay (a bare address is one host)",
		set: setTrustedNetworks},
	{Name: "proxy_protocol_from", Default: strs(), Doc: "load balancers (HAProxy, a cloud LB) whose connections must start with a PROXY protocol header, v1 or v2; the client it names is the one every control, log line and Received: header sees",
		set: setProxyProtocolFrom},
	{Name: "resolver", Default: "", Doc: "`host[:port]` of the DNS server for reverse/forward lookups; \"\" is the system resolver",
		set: stringVal(func(c *Config) *string { return &c.Resolver }, checkResolver)},
	pathKey(Key{Name: "access_map", Default: "", Doc: "path of a sendmail-format access file; re-read on SIGHUP", Sendmail: "FEATURE(access_db)", Path: RegularFile},
		func(c *Config) *string { return &c.AccessMap }),
	pathKey(Key{Name: "hosts_allow", Default: "", Doc: "path of a hosts_access(5) allow file (daemon `mxguard` or `sendmail`)", Path: RegularFile},
		func(c *Config) *string { return &c.HostsAllow }),
	pathKey(Key{Name: "hosts_deny", Default: "", Doc: "path of a hosts_access(5) deny file", Path: RegularFile},
		func(c *Config) *string { return &c.HostsDeny }),
	pathKey(Key{Name: "tls_cert", Default: "", Doc: "STARTTLS certificate chain (PEM); no STARTTLS when empty", Path: RegularFile},
		func(c *Config) *string { return &c.TLSCert }),
	pathKey(Key{Name: "tls_key", Default: "", Doc: "STARTTLS private key (PEM); set with tls_cert", Path: RegularFile},
		func(c *Config) *string { return &c.TLSKey }),
	pathKey(Key{Name: "control", Computed: "\"<data_dir>/control.sock\"", Doc: "Unix socket for `mxguard trust/deny/reload/status`", Path: Socket},
		func(c *Config) *string { return &c.Control }),
	pathKey(Key{Name: "trust_file", Computed: "\"<data_dir>/trusted.txt\"", Doc: "networks added by `mxguard trust`, one a line", Path: OptionalFile},
		func(c *Config) *string { return &c.TrustFile }),
	pathKey(Key{Name: "deny_file", Computed: "\"<data_dir>/denied.txt\"", Doc: "networks added by `mxguard deny`, one a line", Path: OptionalFile},
		func(c *Config) *string { return &c.DenyFile }),
	{Name: "log_format", Default: LogText, Doc: "\"text\" (logfmt, as log/slog's TextHandler) or \"json\" (one JSON object a line); both carry ip= and reason=",
		set: stringVal(func(c *Config) *string { return &c.LogFormat }, checkLogFormat)},
	{Name: "delay_checks", Default: false, Doc: "From: rejections are given at RCPT, and `Spam:<rcpt> FRIEND` lifts them", Sendmail: "FEATURE(delay_checks)",
		set: boolVal(func(c *Config) *bool { return &c.DelayChecks })},

	{Name: "limits.max_daemon_children", Default: int64(0), Doc: "concurrent connections in all; more get 421 (0: no limit)", Sendmail: "confMAX_DAEMON_CHILDREN",
		set: intVal(func(c *Config) *int { return &c.Limits.MaxDaemonChildren }, 0)},
	{Name: "limits.connection_rate_throttle", Default: int64(0), Doc: "new connections per second from all clients; excess ones are stalled (0: off)", Sendmail: "confCONNECTION_RATE_THROTTLE",
		set: intVal(func(c *Config) *int { return &c.Limits.ConnectionRateThrottle }, 0)},
	{Name: "limits.connection_rate_window_size", Default: "60s", Doc: "window of ClientRate", Sendmail: "confCONNECTION_RATE_WINDOW_SIZE",
		set: durationVal(func(c *Config) *time.Duration { return &c.Limits.ConnectionRateWindowSize }, time.Second)},
	{Name: "limits.client_rate", Default: int64(0), Doc: "connections per window from one client without a `ClientRate:` entry (0: no limit)", Sendmail: "ClientRate: (FEATURE(ratecontrol))",
		set: intVal(func(c *Config) *int { return &c.Limits.ClientRate }, limit.MaxRateLimit)},
	{Name: "limits.client_conn", Default: int64(0), Doc: "concurrent connections from one client without a `ClientConn:` entry (0: no limit)", Sendmail: "ClientConn: (FEATURE(conncontrol))",
		set: intVal(func(c *Config) *int { return &c.Limits.ClientConn }, 0)},
	{Name: "limits.ipv4_tiers", Default: []any{int64(32)}, Doc: "prefix lengths ClientRate and ClientConn count IPv4 clients at, the client's own first: [32, 24] also counts each /24 together (mxguard addition)",
		set: tiersVal(func(c *Config) *[]int { return &c.Limits.IPv4Tiers }, 32)},
	{Name: "limits.ipv6_tiers", Default: []any{int64(64)}, Doc: "likewise for IPv6 clients, whose own is their /64: [64, 48] (mxguard addition)",
		set: tiersVal(func(c *Config) *[]int { return &c.Limits.IPv6Tiers }, 128)},
	{Name: "limits.tier_multiplier", Default: int64(4), Doc: "each tier's limit is the one before it times this: client_rate 5 and [32, 24] allow 20 a /24 (mxguard addition)",
		set: intVal(func(c *Config) *int { return &c.Limits.TierMultiplier }, 1000)},
	{Name: "limits.terminate", Default: true, Doc: "over-limit clients get 421 and are closed; false: 452 to MAIL and RCPT", Sendmail: "FEATURE(ratecontrol/conncontrol, `terminate')",
		set: boolVal(func(c *Config) *bool { return &c.Limits.Terminate })},
	{Name: "limits.greet_pause", Default: "0s", Doc: "hold the greeting; clients that talk first get 554 (`GreetPause:` overrides; capped at 5m)", Sendmail: "FEATURE(greet_pause)",
		set: setGreetPause},
	{Name: "limits.bad_rcpt_throttle", Default: int64(0), Doc: "refused RCPTs in a transaction after which each RCPT waits 1 s (0: off)", Sendmail: "confBAD_RCPT_THROTTLE",
		set: intVal(func(c *Config) *int { return &c.Limits.BadRcptThrottle }, 0)},
	{Name: "limits.max_bad_rcpts", Default: int64(20), Doc: "refused recipients in one session after which it gets 421 and is closed, against dictionary attacks (0: no limit; mxguard addition, as Postfix's smtpd_hard_error_limit)",
		set: intVal(func(c *Config) *int { return &c.Limits.MaxBadRcpts }, 0)},
	{Name: "limits.max_rcpts_per_message", Default: int64(0), Doc: "recipients per transaction; more get 452 (0: no limit)", Sendmail: "confMAX_RCPTS_PER_MESSAGE",
		set: intVal(func(c *Config) *int { return &c.Limits.MaxRcptsPerMessage }, 0)},
	{Name: "limits.max_message_size", Default: "25MiB", Doc: "largest message, announced in SIZE (0: no limit); a body more than 64 KiB over it gets 552 at once and the connection is closed", Sendmail: "confMAX_MESSAGE_SIZE",
		set: sizeVal(func(c *Config) *int64 { return &c.Limits.MaxMessageSize })},
	{Name: "limits.hard_error_limit", Default: int64(20), Doc: "protocol errors (unknown, malformed or out-of-sequence commands) in one session after which it gets 421 and is closed (0: no limit; Postfix's smtpd_hard_error_limit)",
		set: intVal(func(c *Config) *int { return &c.Limits.HardErrorLimit }, 0)},
	{Name: "limits.junk_command_limit", Default: int64(100), Doc: "NOOP, VRFY, EXPN, RSET and HELP commands in one session after which each more counts as a protocol error (0: no limit; Postfix's smtpd_junk_command_limit)",
		set: intVal(func(c *Config) *int { return &c.Limits.JunkCommandLimit }, 0)},
	// A session that sends a gigabyte or lasts an hour is no mail server's:
	// they send a few messages over a connection and close it within
	// minutes (Postfix reuses one for 300 s at most). At these values an
	// abuser costs a bounded share of bandwidth and CPU, and a sender that
	// does reach them only gets a 421 and sends the rest over a new
	// connection. checkSessionLimits raises them when max_message_size or
	// datafinal would not fit.
	{Name: "limits.max_session_bytes", Default: "1GiB", Doc: "octets one client may send in one session, counted as they arrive (commands, data, TLS records); at least 2 × max_message_size, to which the default is raised (0: no limit; mxguard addition)",
		set: sizeVal(func(c *Config) *int64 { return &c.Limits.MaxSessionBytes })},
	{Name: "limits.max_session_time", Default: "1h", Doc: "how long one session may last; every wait for the client ends by then; at least timeouts.datafinal, to which the default is raised (0: no limit; mxguard addition)",
		set: limitDurationVal(func(c *Config) *time.Duration { return &c.Limits.MaxSessionTime })},

	timeoutKey(Key{Name: "timeouts.command", Default: "5m", Doc: "server: a command wait without its own value below", Sendmail: "confTO_COMMAND"},
		func(c *Config) *time.Duration { return &c.Timeouts.Command }, time.Second),
	timeoutKey(Key{Name: "timeouts.helo", Default: "0s", Doc: "server: the first command after the greeting; relay: the reply to EHLO/HELO", Sendmail: "confTO_HELO", RelayDefault: "5m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.Helo }, 0),
	timeoutKey(Key{Name: "timeouts.mail", Default: "0s", Doc: "server: the wait for MAIL; relay: the reply to MAIL", Sendmail: "confTO_MAIL", RelayDefault: "5m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.Mail }, 0),
	timeoutKey(Key{Name: "timeouts.rcpt", Default: "0s", Doc: "server: the wait after MAIL; relay: the reply to each RCPT", Sendmail: "confTO_RCPT", RelayDefault: "5m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.Rcpt }, 0),
	timeoutKey(Key{Name: "timeouts.datainit", Default: "0s", Doc: "server: the wait after an accepted RCPT; relay: the reply to DATA", Sendmail: "confTO_DATAINIT", RelayDefault: "2m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.DataInit }, 0),
	timeoutKey(Key{Name: "timeouts.datablock", Default: "3m", Doc: "each 64 KiB of message data (both sides)", Sendmail: "confTO_DATABLOCK", RelayDefault: "3m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.DataBlock }, 0),
	timeoutKey(Key{Name: "timeouts.datafinal", Default: "10m", Doc: "server: the whole body from 354 to the final dot; relay: the reply to the final dot", Sendmail: "confTO_DATAFINAL", RelayDefault: "10m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.DataFinal }, 0),
	timeoutKey(Key{Name: "timeouts.rset", Default: "0s", Doc: "server: the command after RSET", Sendmail: "confTO_RSET", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.Rset }, 0),
	timeoutKey(Key{Name: "timeouts.quit", Default: "0s", Doc: "server: the command after an accepted message; relay: the reply to QUIT", Sendmail: "confTO_QUIT", RelayDefault: "1m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.Quit }, 0),
	timeoutKey(Key{Name: "timeouts.misc", Default: "0s", Doc: "server: the command after NOOP, VRFY, HELP", Sendmail: "confTO_MISC", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.Misc }, 0),
	timeoutKey(Key{Name: "timeouts.starttls", Default: "0s", Doc: "the TLS handshake (both sides)", Sendmail: "confTO_STARTTLS", RelayDefault: "1m", ServerPhase: true},
		func(c *Config) *time.Duration { return &c.Timeouts.StartTLS }, 0),
	timeoutKey(Key{Name: "timeouts.auth", Default: "0s", Doc: "read from sendmail configurations; no effect (mxguard offers no SMTP AUTH)", Sendmail: "confTO_AUTH",
		Unused: "mxguard offers no SMTP AUTH"},
		func(c *Config) *time.Duration { return &c.Timeouts.Auth }, 0),
	timeoutKey(Key{Name: "timeouts.connect", Default: "0s", Doc: "relay: each connect(2) to the downstream", Sendmail: "confTO_CONNECT", RelayDefault: "30s"},
		func(c *Config) *time.Duration { return &c.Timeouts.Connect }, 0),
	timeoutKey(Key{Name: "timeouts.iconnect", Default: "0s", Doc: "read from sendmail configurations; no effect (the relay dials one host: `connect` applies)", Sendmail: "confTO_ICONNECT",
		Unused: "the relay client dials one host, which timeouts.connect bounds"},
		func(c *Config) *time.Duration { return &c.Timeouts.IConnect }, 0),
	timeoutKey(Key{Name: "timeouts.aconnect", Default: "0s", Doc: "read from sendmail configurations; no effect (the relay dials one host: `connect` applies)", Sendmail: "confTO_ACONNECT",
		Unused: "the relay client dials one host, which timeouts.connect bounds"},
		func(c *Config) *time.Duration { return &c.Timeouts.AConnect }, 0),
	timeoutKey(Key{Name: "timeouts.initial", Default: "0s", Doc: "relay: the downstream's greeting", Sendmail: "confTO_INITIAL", RelayDefault: "5m"},
		func(c *Config) *time.Duration { return &c.Timeouts.Initial }, 0),
	timeoutKey(Key{Name: "timeouts.lhlo", Default: "0s", Doc: "relay: the reply to LHLO (LMTP)", Sendmail: "confTO_LHLO", RelayDefault: "5m"},
		func(c *Config) *time.Duration { return &c.Timeouts.LHLO }, 0),
	timeoutKey(Key{Name: "timeouts.control", Default: "30s", Doc: "one exchange on the control socket", Sendmail: "confTO_CONTROL"},
		func(c *Config) *time.Duration { return &c.Timeouts.Control }, time.Second),

	pathKey(Key{Name: "recipients.file", Default: "", Doc: "the addresses that exist, one a line: `user@domain`, or `@domain` for every address of a domain; re-read on SIGHUP", Path: RegularFile},
		func(c *Config) *string { return &c.Recipients.File }),
	pathKey(Key{Name: "recipients.aliases", Default: "", Doc: "sendmail's aliases(5) file (`name: target, target`), expanded at RCPT for every local domain; re-read on SIGHUP", Sendmail: "ALIAS_FILE", Path: RegularFile},
		func(c *Config) *string { return &c.Recipients.Aliases }),
	{Name: "recipients.catch_all", Default: false, Doc: "accept every local part of every local domain (with no configuration file at all: true, with a warning)",
		set: boolVal(func(c *Config) *bool { return &c.Recipients.CatchAll })},

	{Name: "delivery.relay", Default: "", Doc: "\"\": local Maildir under `<data_dir>/mail/<domain>/<localpart>/`; or `smtp://host:port`, `lmtp://host:port`, `lmtp+unix:///path`",
		set: stringVal(func(c *Config) *string { return &c.Delivery.Relay }, checkRelay)},
	{Name: "delivery.queue_lifetime", Default: "5d", Doc: "how long delivery is retried before the message is bounced", Sendmail: "confTO_QUEUERETURN",
		set: durationVal(func(c *Config) *time.Duration { return &c.Delivery.QueueLifetime }, time.Minute)},

	{Name: "delivery.verify", Default: VerifyNone, Doc: "\"probe\": ask the relay about each local recipient the recipients file does not know (MAIL FROM:<>, RCPT TO, RSET) and answer with its verdict; \"\": no probing",
		set: stringVal(func(c *Config) *string { return &c.Delivery.Verify }, checkVerify)},
	{Name: "delivery.verify_positive_ttl", Default: "1d", Doc: "how long a recipient the relay accepted is remembered (fleet: in Redis)",
		set: durationVal(func(c *Config) *time.Duration { return &c.Delivery.VerifyPositiveTTL }, time.Second)},
	{Name: "delivery.verify_negative_ttl", Default: "1h", Doc: "how long a recipient the relay refused is remembered (fleet: in Redis)",
		set: durationVal(func(c *Config) *time.Duration { return &c.Delivery.VerifyNegativeTTL }, time.Second)},
	{Name: "delivery.verify_max_probes", Default: int64(8), Doc: "probes (and connections to the relay) at once; further unknown recipients wait for one, or get 450",
		set: intVal(func(c *Config) *int { return &c.Delivery.VerifyMaxProbes }, 0)},

	{Name: "reputation.tarpit_below", Default: int64(-3), Doc: "replies to a client whose score is below this are slowed, tarpit_step a point (0: no tarpit)",
		set: pointsVal(func(c *Config) *int { return &c.Reputation.TarpitBelow })},
	{Name: "reputation.tarpit_step", Default: "500ms", Doc: "the delay for each point below tarpit_below",
		set: durationVal(func(c *Config) *time.Duration { return &c.Reputation.TarpitStep }, time.Millisecond)},
	{Name: "reputation.tarpit_max", Default: "5s", Doc: "the longest delay of one reply",
		set: durationVal(func(c *Config) *time.Duration { return &c.Reputation.TarpitMax }, time.Millisecond)},
	{Name: "reputation.ban_below", Default: int64(0), Doc: "a client whose score falls to this is refused at connect for ban_time (0: no bans); `mxguard trust` lifts a ban",
		set: pointsVal(func(c *Config) *int { return &c.Reputation.BanBelow })},
	{Name: "reputation.ban_time", Default: "1h", Doc: "how long a ban lasts",
		set: durationVal(func(c *Config) *time.Duration { return &c.Reputation.BanTime }, time.Second)},
	{Name: "reputation.forgive_after", Default: "5m", Doc: "one point of a client's score is forgiven after this long",
		set: durationVal(func(c *Config) *time.Duration { return &c.Reputation.ForgiveAfter }, time.Second)},
	{Name: "reputation.pregreet_points", Default: int64(-5), Doc: "the cost of talking before the greeting",
		set: pointsVal(func(c *Config) *int { return &c.Reputation.PregreetPoints })},
	{Name: "reputation.protocol_error_points", Default: int64(-2), Doc: "the cost of each protocol violation (pipelining, HTTP, bare LF or CR, NUL, over-long lines, too many errors)",
		set: pointsVal(func(c *Config) *int { return &c.Reputation.ProtocolErrorPoints })},
	{Name: "reputation.unknown_user_points", Default: int64(-1), Doc: "the cost of each refused recipient (unknown user, relaying denied)",
		set: pointsVal(func(c *Config) *int { return &c.Reputation.UnknownUserPoints })},
	{Name: "reputation.no_fcrdns_points", Default: int64(-1), Doc: "the standing cost of a client without a confirmed reverse name (each DNS blocklist adds minus its weight)",
		set: pointsVal(func(c *Config) *int { return &c.Reputation.NoFCrDNSPoints })},
	{Name: "reputation.max_clients", Default: int64(100000), Doc: "how many clients' scores are kept; the least recently seen are forgotten first",
		set: intVal(func(c *Config) *int { return &c.Reputation.MaxClients }, 0)},

	{Name: "dnsbl.sites", Default: strs(), Doc: "DNS block and allow lists asked at connect, postscreen_dnsbl_sites syntax: `domain[=filter][*weight]`, e.g. \"zen.spamhaus.org*2\", \"list.dnswl.org=127.0.[0..255].[1..3]*-5\"; none: no lists",
		Sendmail: "FEATURE(dnsbl), FEATURE(enhdnsbl)", set: setDNSBLSites},
	{Name: "dnsbl.threshold", Default: int64(1), Doc: "a client whose weights add up to this or more is listed",
		set: thresholdVal(func(c *Config) *int { return &c.DNSBL.Threshold })},
	{Name: "dnsbl.allowlist_threshold", Default: int64(0), Doc: "a client whose weights add up to this or less (negative: allow lists) skips the greeting pause and the tarpit (0: off)",
		set: pointsVal(func(c *Config) *int { return &c.DNSBL.AllowlistThreshold })},
	{Name: "dnsbl.action", Default: DNSBLReject, Doc: "for a listed client: \"reject\" (554 instead of the greeting), \"reject_rcpt\" (550 to each RCPT, so that its envelopes are logged) or \"score\" (its weight only lowers its reputation)",
		set: stringVal(func(c *Config) *string { return &c.DNSBL.Action }, checkDNSBLAction)},
	{Name: "dnsbl.timeout", Default: "5s", Doc: "the longest the greeting waits for the lists (within the greeting pause, if longer); a list that has not answered counts as not listing",
		set: durationVal(func(c *Config) *time.Duration { return &c.DNSBL.Timeout }, time.Millisecond)},
	{Name: "dnsbl.min_ttl", Default: "60s", Doc: "an answer is cached for its DNS TTL, at least this",
		set: durationVal(func(c *Config) *time.Duration { return &c.DNSBL.MinTTL }, time.Second)},
	{Name: "dnsbl.max_ttl", Default: "1h", Doc: "and at most this",
		set: durationVal(func(c *Config) *time.Duration { return &c.DNSBL.MaxTTL }, time.Second)},
	{Name: "dnsbl.max_in_flight", Default: int64(256), Doc: "DNS queries at once, shared by the lists; a client beyond it counts as not listed",
		set: intVal(func(c *Config) *int { return &c.DNSBL.MaxInFlight }, 0)},

	{Name: "stress.sessions_percent", Default: int64(80), Doc: "the server goes under stress when the admitted sessions reach this share of max_daemon_children (0, or no max_daemon_children: not watched)",
		set: intVal(func(c *Config) *int { return &c.Stress.SessionsPercent }, 100)},
	{Name: "stress.accept_backlog", Default: int64(100), Doc: "or when this many connections wait in a listener's accept queue (the accept loop falls behind; Linux), or accepting fails (0: not watched)",
		set: intVal(func(c *Config) *int { return &c.Stress.AcceptBacklog }, 0)},
	{Name: "stress.hold", Default: "1000s", Doc: "the server leaves stress after the load has stayed below both for this long",
		set: durationVal(func(c *Config) *time.Duration { return &c.Stress.Hold }, time.Second)},
	{Name: "stress.command_timeout", Default: "10s", Doc: "under stress, every command wait and data block is at most this, for the sessions already open too",
		set: durationVal(func(c *Config) *time.Duration { return &c.Stress.CommandTimeout }, time.Second)},
	{Name: "stress.hard_error_limit", Default: int64(1), Doc: "under stress, hard_error_limit is at most this",
		set: intVal(func(c *Config) *int { return &c.Stress.HardErrorLimit }, 0)},
	{Name: "stress.junk_command_limit", Default: int64(1), Doc: "under stress, junk_command_limit is at most this",
		set: intVal(func(c *Config) *int { return &c.Stress.JunkCommandLimit }, 0)},
	{Name: "stress.greet_pause", Default: "2s", Doc: "under stress, a greeting pause is at most this (no pause stays none)",
		set: durationVal(func(c *Config) *time.Duration { return &c.Stress.GreetPause }, 0)},
	{Name: "stress.dnsbl_reject", Default: true, Doc: "under stress, a client the lists score at or over dnsbl.threshold gets 521 instead of the greeting and is closed, whatever dnsbl.action says",
		set: boolVal(func(c *Config) *bool { return &c.Stress.DNSBLReject })},

	{Name: "fleet.redis", Default: "", Doc: "Redis shared by the nodes: host:port or a redis://, rediss://, unix:// URL; \"\" (and no sentinel or cluster) is in-process counters",
		set: stringVal(func(c *Config) *string { return &c.Fleet.Redis }, checkRedisValue)},
	{Name: "fleet.sentinel", Default: strs(), Doc: "instead of redis: Redis Sentinels (host:port) that name the primary of master_name, which they fail over to a replica when it dies",
		set: addrsVal(func(c *Config) *Addrs { return &c.Fleet.Sentinel })},
	{Name: "fleet.master_name", Default: "", Doc: "the name the Sentinels monitor the primary under (sentinel monitor NAME ...); needed with sentinel",
		set: stringVal(func(c *Config) *string { return &c.Fleet.MasterName }, checkMasterName)},
	{Name: "fleet.sentinel_password", Default: "", Doc: "the Sentinels' requirepass; \"\" is none",
		set: stringVal(func(c *Config) *string { return &c.Fleet.SentinelPassword }, nil)},
	{Name: "fleet.cluster", Default: strs(), Doc: "instead of redis: some nodes (host:port) of a Redis Cluster, which shards the counters by client",
		set: addrsVal(func(c *Config) *Addrs { return &c.Fleet.Cluster })},
	{Name: "fleet.key_prefix", Default: "mxguard:", Doc: "prefix of every Redis key",
		set: stringVal(func(c *Config) *string { return &c.Fleet.KeyPrefix }, nil)},
	{Name: "fleet.on_redis_error", Default: OnRedisErrorLocal, Doc: "when Redis is away: \"local\" counts on this node, \"tempfail\" answers 421",
		set: stringVal(func(c *Config) *string { return &c.Fleet.OnRedisError }, checkOnRedisError)},

	{Name: "admin.listen", Default: "", Doc: "host:port of the admin HTTP listener (/metrics for Prometheus, /healthz, /readyz); \"\" is off; give a loopback address unless the network may see the figures",
		set: stringVal(func(c *Config) *string { return &c.Admin.Listen }, checkAdminListen)},
	{Name: "admin.console", Default: false, Doc: "serve the web console under /console/ on the admin listener: live figures, offenders, bans, and deny, ban and trust in one click (with a token)",
		set: boolVal(func(c *Config) *bool { return &c.Admin.Console })},
	{Name: "admin.console_token", Default: "", Doc: "the secret a state change from the console must carry (at least 16 characters, e.g. `openssl rand -hex 32`); with neither this nor console_token_file the console is read-only",
		set: stringVal(func(c *Config) *string { return &c.Admin.ConsoleToken }, checkConsoleTokenValue)},
	pathKey(Key{Name: "admin.console_token_file", Default: "", Doc: "a file holding the console's token instead (readable by mxguard only); read at each state change, so a new token needs no restart", Path: RegularFile},
		func(c *Config) *string { return &c.Admin.ConsoleTokenFile }),
}

// keyIndex finds a key by section and name. It is built once from schema
// and read-only after.
var keyIndex = func() map[string]map[string]*Key {
	idx := make(map[string]map[string]*Key)
	for i := range schema {
		k := &schema[i]
		sec, name := k.Section()
		if idx[sec] == nil {
			idx[sec] = make(map[string]*Key)
		}
		if idx[sec][name] != nil {
			panic("config: key declared twice: " + k.Name)
		}
		idx[sec][name] = k
	}
	return idx
}()

// LookupKey returns the key with the dotted name ("limits.client_rate").
func LookupKey(name string) (Key, bool) {
	sec, k, ok := strings.Cut(name, ".")
	if !ok {
		sec, k = "", name
	}
	if key := lookupKey(sec, k); key != nil {
		return *key, true
	}
	return Key{}, false
}

// lookupKey returns the key name in section ("" for the top level).
func lookupKey(section, name string) *Key { return keyIndex[section][name] }

// isSection reports whether name is a table of the file.
func isSection(name string) bool { return name != "" && keyIndex[name] != nil }

// Package config loads and checks mxguard's configuration file.
//
// The file is TOML. Option names follow sendmail's in snake_case so that a
// sendmail administrator finds them at once; testdata/full.toml shows every
// key with its default and meaning. Every key is optional: Default is what an
// empty file means.
//
// Parse reports every problem in a file at once, each with its line, because
// an operator fixing a config by trial and error against a server that only
// names the first mistake loses a restart per mistake. Unknown keys are
// errors, not silently ignored, since a misspelt limit that does nothing is
// worse than no limit at all.
package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/redisconn"
)

// Config is a loaded configuration. Relative paths given in a file are
// resolved against the directory of that file, so that the server finds the
// same files whatever its working directory; the defaults, which come from no
// file, stay relative to the working directory.
type Config struct {
	Hostname        string         // name in the greeting and replies; default os.Hostname()
	Listen          []string       // host:port addresses to listen on; default ["127.0.0.1:2525"]
	DataDir         string         // spool and default Maildir root; default "./data"
	LocalDomains    []string       // domains we accept mail for; lower-case, no trailing dot
	TrustedNetworks []netip.Prefix // never limited, may relay; a bare IP means a single host
	// ProxyProtocolFrom are the load balancers whose connections start
	// with a PROXY protocol header naming the real client.
	ProxyProtocolFrom []netip.Prefix
	Resolver          string // "" = the system resolver; else host:port
	AccessMap         string // path of a sendmail-format access file; "" = none
	HostsAllow        string // path of a hosts_access(5) allow file; "" = none
	HostsDeny         string // path of a hosts_access(5) deny file; "" = none
	TLSCert           string // STARTTLS certificate (PEM); set together with TLSKey
	TLSKey            string // STARTTLS private key (PEM)
	Control           string // path of the local control socket; default <data_dir>/control.sock
	TrustFile         string // networks added by `mxguard trust`; default <data_dir>/trusted.txt
	DenyFile          string // networks added by `mxguard deny`; default <data_dir>/denied.txt
	DelayChecks       bool   // sendmail FEATURE(delay_checks): apply From: rejections at RCPT
	LogFormat         string // LogText or LogJSON

	Limits     Limits
	Timeouts   Timeouts
	Delivery   Delivery
	Recipients Recipients
	Fleet      Fleet
	Admin      Admin
	Reputation Reputation
	Stress     Stress
	DNSBL      DNSBL

	// Path is the file the configuration was loaded from; "" for defaults.
	Path string
	// Warnings are notes about values that were accepted but adjusted,
	// formatted like errors ("FILE:LINE: key: text").
	Warnings []string

	// lines maps each key set in the file to its line, so that problems
	// found after parsing (CheckPaths, the files a key names) still point
	// at the line that caused them.
	lines map[string]int
}

// KeyError is a problem with the value of key, found after parsing: it
// names the file and the line the key is set on (none for a default).
func (c *Config) KeyError(key string, err error) Error {
	return Error{File: c.Path, Line: c.lines[key], Key: key, Msg: err.Error()}
}

// Line is the line of the file the key is set on ("limits.client_rate";
// a table's name, "limits", gives the line that opens it), 0 when the file
// does not set it.
func (c *Config) Line(key string) int { return c.lines[key] }

// Limits are the connection and transaction limits of [limits]. For every
// count, 0 means off (unlimited).
type Limits struct {
	MaxDaemonChildren        int           // concurrent connections in all
	ConnectionRateThrottle   int           // new connections per second; excess ones are stalled
	ConnectionRateWindowSize time.Duration // window of ClientRate; default 60s
	ClientRate               int           // per-client connections per window, when the access map says nothing
	ClientConn               int           // per-client concurrent connections, when the access map says nothing
	IPv4Tiers                []int         // prefix lengths ClientRate/ClientConn count at, narrowest first; default [32]
	IPv6Tiers                []int         // likewise for IPv6; default [64]
	TierMultiplier           int           // each wider tier's limit is the previous one's times this
	Terminate                bool          // close over-limit connections with 421 (true) or answer 452 to MAIL/RCPT
	GreetPause               time.Duration // greeting delay; at most MaxGreetPause
	BadRcptThrottle          int           // rejected RCPTs after which each RCPT waits a second
	MaxBadRcpts              int           // rejected RCPTs in a session after which it gets 421
	MaxRcptsPerMessage       int           // recipients per transaction
	MaxMessageSize           int64         // bytes; default 25 MiB
	MaxSessionBytes          int64         // bytes read from one client in one session, TLS included; default 1 GiB
	MaxSessionTime           time.Duration // how long one session may last; default 1h
	HardErrorLimit           int           // protocol errors in a session before 421
	JunkCommandLimit         int           // NOOP, VRFY, EXPN, RSET, HELP before each more counts as an error
}

// MaxGreetPause is the longest greeting pause mxguard will apply. RFC 5321
// section 4.5.3.2 gives clients 5 minutes to wait for the greeting; a longer
// pause would only make compliant clients give up, so sendmail caps it there
// too.
const MaxGreetPause = 5 * time.Minute

// Timeouts are the per-phase timeouts of [timeouts], named after sendmail's
// Timeout.* options. Server side each bounds the wait for the client in that
// phase; a zero value there means "use Command". Client side (relay
// delivery) each bounds the wait for the downstream server's reply.
type Timeouts struct {
	Command   time.Duration // default 5m
	Helo      time.Duration
	Mail      time.Duration
	Rcpt      time.Duration
	DataInit  time.Duration
	DataBlock time.Duration // default 3m
	DataFinal time.Duration // default 10m
	Rset      time.Duration
	Quit      time.Duration
	Misc      time.Duration
	StartTLS  time.Duration
	Auth      time.Duration
	Connect   time.Duration
	IConnect  time.Duration
	AConnect  time.Duration
	Initial   time.Duration
	LHLO      time.Duration
	Control   time.Duration
}

// Delivery says where accepted mail goes.
type Delivery struct {
	// Relay is "" for local Maildir delivery under <data_dir>/mail, or one of
	// smtp://host:port, lmtp://host:port and lmtp+unix:///path.
	Relay string
	// QueueLifetime is how long delivery is retried before the message is
	// bounced; default 5 days.
	QueueLifetime time.Duration
	// Verify is "" or "probe": ask the relay target about each local
	// recipient at RCPT, and answer the client with its verdict.
	Verify            string
	VerifyPositiveTTL time.Duration // how long a recipient the downstream took is remembered
	VerifyNegativeTTL time.Duration // how long one it refused is remembered
	VerifyMaxProbes   int           // probes (and connections to the downstream) at once
}

// Values of Delivery.Verify.
const (
	VerifyNone  = ""
	VerifyProbe = "probe"
)

// Recipients says which addresses of the local domains exist.
type Recipients struct {
	File     string // accepted addresses, one a line ("@domain": all of it); "" = none
	Aliases  string // sendmail aliases(5) file; "" = none
	CatchAll bool   // accept every local part of every local domain
}

// Fleet configures counters shared by several nodes behind one MX record,
// in Redis: one server (Redis), a primary that Redis Sentinel fails over
// to a replica (Sentinel and MasterName), or a Redis Cluster (Cluster); at
// most one of the three is set.
type Fleet struct {
	Redis            string // "" = in-process counters; host:port or a redis://, rediss:// or unix:// URL
	Sentinel         Addrs  // Redis Sentinels that name the primary; none = no Sentinel
	MasterName       string // the name the Sentinels monitor the primary under
	SentinelPassword string // the Sentinels' requirepass; "" = none
	Cluster          Addrs  // some nodes of a Redis Cluster; none = no Cluster
	KeyPrefix        string // prefix of every Redis key; default "mxguard:"
	OnRedisError     string // "local" (default): fall back to local counters; "tempfail": answer 421
}

// Shared reports whether the nodes share their counters in Redis: one of
// redis, sentinel and cluster is set.
func (f Fleet) Shared() bool {
	return f.Redis != "" || f.Sentinel != "" || f.Cluster != ""
}

// RedisOptions are the Redis client's options for the fleet: where Redis
// is, and per-call bounds left at redisconn's defaults.
func (f Fleet) RedisOptions() redisconn.Options {
	return redisconn.Options{
		Redis:            f.Redis,
		Sentinel:         f.Sentinel.List(),
		MasterName:       f.MasterName,
		SentinelPassword: f.SentinelPassword,
		Cluster:          f.Cluster.List(),
	}
}

// Addrs is a list of host:port addresses, in the order given. It is a
// string underneath, the addresses joined by spaces (which no host:port
// holds), so that Fleet stays comparable: a reload tells a changed [fleet]
// with ==.
type Addrs string

// List returns the addresses; nil for "".
func (a Addrs) List() []string {
	if a == "" {
		return nil
	}
	return strings.Fields(string(a))
}

// Values of LogFormat.
const (
	LogText = "text"
	LogJSON = "json"
)

// Reputation is the scoring of clients by what they do: a tarpit for the
// low and a ban for the lowest. Scores are negative for bad behaviour.
type Reputation struct {
	TarpitBelow         int           // replies slowed below this score; 0 = no tarpit
	TarpitStep          time.Duration // per point below TarpitBelow
	TarpitMax           time.Duration
	BanBelow            int // banned at or below this score; 0 = no bans
	BanTime             time.Duration
	ForgiveAfter        time.Duration // one point forgiven after this long
	PregreetPoints      int
	ProtocolErrorPoints int
	UnknownUserPoints   int
	NoFCrDNSPoints      int
	MaxClients          int
}

// DNSBL is the scoring of clients by DNS block and allow lists at connect,
// postscreen's model.
type DNSBL struct {
	Sites              []string      // postscreen_dnsbl_sites syntax; none = off
	Threshold          int           // score at or above which a client is listed
	AllowlistThreshold int           // score at or below which a client is allowlisted; 0 = off
	Action             string        // DNSBLReject, DNSBLRejectRcpt or DNSBLScore
	Timeout            time.Duration // the longest wait for the lists' answers
	MinTTL, MaxTTL     time.Duration // an answer's DNS TTL is clamped to these
	MaxInFlight        int           // DNS queries at once
}

// Values of DNSBL.Action.
const (
	DNSBLReject     = "reject"
	DNSBLRejectRcpt = "reject_rcpt"
	DNSBLScore      = "score"
)

// Stress is when the server goes under stress and the profile it then
// applies (Postfix's STRESS_README).
type Stress struct {
	SessionsPercent  int           // of max_daemon_children; 0 = not watched
	AcceptBacklog    int           // connections in a listener's accept queue; 0 = not watched
	Hold             time.Duration // calm before leaving stress
	CommandTimeout   time.Duration
	HardErrorLimit   int
	JunkCommandLimit int
	GreetPause       time.Duration
	DNSBLReject      bool // a listed client gets 521 at the greeting, whatever DNSBL.Action
}

// Admin configures the admin HTTP listener.
type Admin struct {
	Listen string // host:port; "" = off
	// Console serves the web console under /console/ on the listener.
	Console bool
	// ConsoleToken (or the content of ConsoleTokenFile) is what a state
	// change from the console must carry; with neither, it is read-only.
	ConsoleToken     string
	ConsoleTokenFile string
}

// Values of Fleet.OnRedisError.
const (
	OnRedisErrorLocal    = "local"
	OnRedisErrorTempfail = "tempfail"
)

// Default returns the configuration an empty file means: each key's
// default from the schema (Keys), the OS host name, and the state files in
// the data directory.
func Default() *Config {
	c := &Config{}
	p := newParser(c, nil, "")
	for i := range schema {
		k := &schema[i]
		if k.Default == nil {
			continue
		}
		if err := k.set(p, k.Default); err != nil {
			// The schema is code: TestSchemaDefaults keeps this unreachable.
			panic("config: default of " + k.Name + ": " + err.Error())
		}
	}
	host, err := os.Hostname()
	if err != nil || !isHostname(host) {
		host = "localhost"
	}
	c.Hostname = host
	c.deriveDataPaths()
	return c
}

// NoFile is the configuration of `mxguard serve` given no file: Default,
// but with recipients.catch_all on, so that a newcomer's first message to
// any local part of localhost lands, and a warning saying so. Any
// configuration file, even an empty one, means Default: no catch-all.
func NoFile() *Config {
	c := Default()
	c.Recipients.CatchAll = true
	c.Warnings = append(c.Warnings, "no configuration file: accepting mail for every local part of "+
		strings.Join(c.LocalDomains, ", ")+" (recipients.catch_all); a real host lists its users in [recipients]")
	return c
}

// deriveDataPaths fills in the files that live in the data directory unless
// the configuration names them.
func (c *Config) deriveDataPaths() {
	if c.Control == "" {
		c.Control = filepath.Join(c.DataDir, "control.sock")
	}
	if c.TrustFile == "" {
		c.TrustFile = filepath.Join(c.DataDir, "trusted.txt")
	}
	if c.DenyFile == "" {
		c.DenyFile = filepath.Join(c.DataDir, "denied.txt")
	}
}

// Load reads and parses the configuration file at path. If the file cannot
// be read the error is the one from the file system; if its content has
// problems the error is an Errors listing all of them.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse parses a configuration file's content. path names the file in
// error messages and anchors relative paths; it may be "". When data has
// problems the error is an Errors listing every one, sorted by line.
func Parse(data []byte, path string) (*Config, error) {
	c := Default()
	c.Path = path
	// Derived paths are recomputed once data_dir is known.
	c.Control, c.TrustFile, c.DenyFile = "", "", ""

	p := newParser(c, data, path)
	p.run()
	if len(p.errs) > 0 {
		p.errs.sort()
		return nil, p.errs
	}
	c.lines = p.lines
	return c, nil
}

// RelayTarget splits a validated Delivery.Relay into the protocol ("smtp"
// or "lmtp"), the network ("tcp" or "unix") and the address to dial. For
// local delivery (Relay == "") all three are "".
func (d Delivery) RelayTarget() (proto, network, address string) {
	t, err := parseRelay(d.Relay)
	if err != nil {
		return "", "", ""
	}
	return t.proto, t.network, t.address
}

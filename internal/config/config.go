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
	"time"
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
	Resolver        string         // "" = the system resolver; else host:port
	AccessMap       string         // path of a sendmail-format access file; "" = none
	HostsAllow      string         // path of a hosts_access(5) allow file; "" = none
	HostsDeny       string         // path of a hosts_access(5) deny file; "" = none
	TLSCert         string         // STARTTLS certificate (PEM); set together with TLSKey
	TLSKey          string         // STARTTLS private key (PEM)
	Control         string         // path of the local control socket; default <data_dir>/control.sock
	TrustFile       string         // networks added by `mxguard trust`; default <data_dir>/trusted.txt
	DenyFile        string         // networks added by `mxguard deny`; default <data_dir>/denied.txt
	DelayChecks     bool           // sendmail FEATURE(delay_checks): apply From: rejections at RCPT

	Limits   Limits
	Timeouts Timeouts
	Delivery Delivery
	Fleet    Fleet

	// Path is the file the configuration was loaded from; "" for defaults.
	Path string
	// Warnings are notes about values that were accepted but adjusted,
	// formatted like errors ("FILE:LINE: key: text").
	Warnings []string
}

// Limits are the connection and transaction limits of [limits]. For every
// count, 0 means off (unlimited).
type Limits struct {
	MaxDaemonChildren        int           // concurrent connections in all
	ConnectionRateThrottle   int           // new connections per second; excess ones are stalled
	ConnectionRateWindowSize time.Duration // window of ClientRate; default 60s
	ClientRate               int           // per-client connections per window, when the access map says nothing
	ClientConn               int           // per-client concurrent connections, when the access map says nothing
	Terminate                bool          // close over-limit connections with 421 (true) or answer 452 to MAIL/RCPT
	GreetPause               time.Duration // greeting delay; at most MaxGreetPause
	BadRcptThrottle          int           // rejected RCPTs after which each RCPT waits a second
	MaxRcptsPerMessage       int           // recipients per transaction
	MaxMessageSize           int64         // bytes; default 25 MiB
	MaxSessionBytes          int64         // bytes read from one client in one session, TLS included; default 1 GiB
	MaxSessionTime           time.Duration // how long one session may last; default 1h
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
}

// Fleet configures counters shared by several nodes behind one MX record.
type Fleet struct {
	Redis        string // "" = in-process counters; host:port or a redis://, rediss:// or unix:// URL
	KeyPrefix    string // prefix of every Redis key; default "mxguard:"
	OnRedisError string // "local" (default): fall back to local counters; "tempfail": answer 421
}

// Values of Fleet.OnRedisError.
const (
	OnRedisErrorLocal    = "local"
	OnRedisErrorTempfail = "tempfail"
)

// Default returns the configuration an empty file means: mail for localhost
// on 127.0.0.1:2525 into ./data, with RFC 5321's minimum timeouts.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	c := &Config{
		Hostname:     host,
		Listen:       []string{"127.0.0.1:2525"},
		DataDir:      "./data",
		LocalDomains: []string{"localhost"},
		TrustedNetworks: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
		},
		Limits: Limits{
			ConnectionRateWindowSize: 60 * time.Second,
			Terminate:                true,
			MaxMessageSize:           25 << 20,
			// A session that sends a gigabyte or lasts an hour is no
			// mail server's: they send a few messages over a connection
			// and close it within minutes (Postfix reuses one for 300 s
			// at most). At these values an abuser costs a bounded share
			// of bandwidth and CPU, and a sender that does reach them
			// only gets a 421 and sends the rest over a new connection.
			// finish raises them when max_message_size or datafinal
			// would not fit.
			MaxSessionBytes: 1 << 30,
			MaxSessionTime:  time.Hour,
		},
		Timeouts: Timeouts{
			Command:   5 * time.Minute,
			DataBlock: 3 * time.Minute,
			DataFinal: 10 * time.Minute,
		},
		Delivery: Delivery{QueueLifetime: 5 * 24 * time.Hour},
		Fleet: Fleet{
			KeyPrefix:    "mxguard:",
			OnRedisError: OnRedisErrorLocal,
		},
	}
	c.deriveDataPaths()
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

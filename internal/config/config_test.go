package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redisconn"
)

// parse parses a test document that must be valid.
func parse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatalf("Parse(%q): %v", doc, err)
	}
	return c
}

// parseErrors parses a test document that must be invalid.
func parseErrors(t *testing.T, doc string) Errors {
	t.Helper()
	c, err := Parse([]byte(doc), "test.toml")
	if err == nil {
		t.Fatalf("Parse(%q) = %+v, want an error", doc, c)
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse(%q) error is %T, want Errors", doc, err)
	}
	return errs
}

func TestDefaults(t *testing.T) {
	c := parse(t, "# nothing but a comment\n")
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Hostname", c.Hostname, host},
		{"Listen", c.Listen, []string{"127.0.0.1:2525"}},
		{"DataDir", c.DataDir, "./data"},
		{"LocalDomains", c.LocalDomains, []string{"localhost"}},
		{"TrustedNetworks", c.TrustedNetworks, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}},
		{"ProxyProtocolFrom", c.ProxyProtocolFrom, []netip.Prefix{}},
		{"Resolver", c.Resolver, ""},
		{"AccessMap", c.AccessMap, ""},
		{"HostsAllow", c.HostsAllow, ""},
		{"HostsDeny", c.HostsDeny, ""},
		{"TLSCert", c.TLSCert, ""},
		{"TLSKey", c.TLSKey, ""},
		{"Control", c.Control, filepath.Join("data", "control.sock")},
		{"TrustFile", c.TrustFile, filepath.Join("data", "trusted.txt")},
		{"DenyFile", c.DenyFile, filepath.Join("data", "denied.txt")},
		{"DelayChecks", c.DelayChecks, false},
		{"LogFormat", c.LogFormat, "text"},
		{"Limits", c.Limits, Limits{
			ConnectionRateWindowSize: time.Minute,
			IPv4Tiers:                []int{32},
			IPv6Tiers:                []int{64},
			TierMultiplier:           4,
			Terminate:                true,
			MaxBadRcpts:              20,
			MaxMessageSize:           25 << 20,
			MaxSessionBytes:          1 << 30,
			MaxSessionTime:           time.Hour,
			HardErrorLimit:           20,
			JunkCommandLimit:         100,
		}},
		{"Timeouts", c.Timeouts, Timeouts{Command: 5 * time.Minute, DataBlock: 3 * time.Minute, DataFinal: 10 * time.Minute, Control: 30 * time.Second}},
		{"Delivery", c.Delivery, Delivery{QueueLifetime: 5 * 24 * time.Hour, VerifyPositiveTTL: 24 * time.Hour, VerifyNegativeTTL: time.Hour, VerifyMaxProbes: 8}},
		{"Recipients", c.Recipients, Recipients{}},
		{"Reputation", c.Reputation, Reputation{TarpitBelow: -3, TarpitStep: 500 * time.Millisecond, TarpitMax: 5 * time.Second,
			BanTime: time.Hour, ForgiveAfter: 5 * time.Minute, PregreetPoints: -5,
			ProtocolErrorPoints: -2, UnknownUserPoints: -1, NoFCrDNSPoints: -1, MaxClients: 100000}},
		{"Stress", c.Stress, Stress{SessionsPercent: 80, AcceptBacklog: 100, Hold: 1000 * time.Second,
			CommandTimeout: 10 * time.Second, HardErrorLimit: 1, JunkCommandLimit: 1, GreetPause: 2 * time.Second, DNSBLReject: true}},
		{"DNSBL", c.DNSBL, DNSBL{Threshold: 1, Action: "reject", Timeout: 5 * time.Second,
			MinTTL: time.Minute, MaxTTL: time.Hour, MaxInFlight: 256}},
		{"Fleet", c.Fleet, Fleet{KeyPrefix: "mxguard:", OnRedisError: "local"}},
		{"Path", c.Path, "test.toml"},
		{"Warnings", len(c.Warnings), 0},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}

	// Default and an empty file agree.
	d := Default()
	d.Path, d.lines = c.Path, c.lines
	if !reflect.DeepEqual(d, c) {
		t.Errorf("Default() = %+v\nempty file = %+v", d, c)
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		doc  string
		get  func(c *Config) any
		want any
	}{
		{`hostname = "mx.example.org"`, func(c *Config) any { return c.Hostname }, "mx.example.org"},
		{`listen = [":25", "[::1]:2525", "127.0.0.1:0", "localhost:25"]`, func(c *Config) any { return c.Listen },
			[]string{":25", "[::1]:2525", "127.0.0.1:0", "localhost:25"}},
		{`data_dir = "/srv/mx"`, func(c *Config) any { return c.DataDir }, "/srv/mx"},
		{`data_dir = "/srv/mx"`, func(c *Config) any { return c.Control }, "/srv/mx/control.sock"},
		{`data_dir = "/srv/mx"`, func(c *Config) any { return c.TrustFile }, "/srv/mx/trusted.txt"},
		{`data_dir = "/srv/mx"`, func(c *Config) any { return c.DenyFile }, "/srv/mx/denied.txt"},
		{`local_domains = ["Example.ORG.", "example.net", "example.org"]`, func(c *Config) any { return c.LocalDomains },
			[]string{"example.org", "example.net"}},
		{`trusted_networks = ["10.1.2.3/8", "192.0.2.7", "2001:db8::1", "2001:db8:1::/48"]`, func(c *Config) any { return c.TrustedNetworks },
			[]netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("192.0.2.7/32"),
				netip.MustParsePrefix("2001:db8::1/128"),
				netip.MustParsePrefix("2001:db8:1::/48"),
			}},
		{`trusted_networks = []`, func(c *Config) any { return c.TrustedNetworks }, []netip.Prefix{}},
		{`proxy_protocol_from = ["10.9.8.7/8", "192.0.2.80", "2001:db8::/32"]`, func(c *Config) any { return c.ProxyProtocolFrom },
			[]netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("192.0.2.80/32"),
				netip.MustParsePrefix("2001:db8::/32"),
			}},
		{`resolver = "192.0.2.53"`, func(c *Config) any { return c.Resolver }, "192.0.2.53:53"},
		{`resolver = "2001:db8::53"`, func(c *Config) any { return c.Resolver }, "[2001:db8::53]:53"},
		{`resolver = "[2001:db8::53]:5353"`, func(c *Config) any { return c.Resolver }, "[2001:db8::53]:5353"},
		{`resolver = "ns.example.org"`, func(c *Config) any { return c.Resolver }, "ns.example.org:53"},
		{`resolver = ""`, func(c *Config) any { return c.Resolver }, ""},
		{`access_map = "/etc/mail/access"`, func(c *Config) any { return c.AccessMap }, "/etc/mail/access"},
		{`hosts_allow = "/etc/hosts.allow"`, func(c *Config) any { return c.HostsAllow }, "/etc/hosts.allow"},
		{`hosts_deny = "/etc/hosts.deny"`, func(c *Config) any { return c.HostsDeny }, "/etc/hosts.deny"},
		{"tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"", func(c *Config) any { return [2]string{c.TLSCert, c.TLSKey} }, [2]string{"/c.pem", "/k.pem"}},
		{`control = "/run/mx.sock"`, func(c *Config) any { return c.Control }, "/run/mx.sock"},
		{`trust_file = "/t.txt"`, func(c *Config) any { return c.TrustFile }, "/t.txt"},
		{`deny_file = "/d.txt"`, func(c *Config) any { return c.DenyFile }, "/d.txt"},
		{`delay_checks = true`, func(c *Config) any { return c.DelayChecks }, true},
		{`log_format = "json"`, func(c *Config) any { return c.LogFormat }, "json"},

		{"[limits]\nmax_daemon_children = 60", func(c *Config) any { return c.Limits.MaxDaemonChildren }, 60},
		{"[limits]\nconnection_rate_throttle = 5", func(c *Config) any { return c.Limits.ConnectionRateThrottle }, 5},
		{"[limits]\nconnection_rate_window_size = \"2m\"", func(c *Config) any { return c.Limits.ConnectionRateWindowSize }, 2 * time.Minute},
		{"[limits]\nclient_rate = 5", func(c *Config) any { return c.Limits.ClientRate }, 5},
		{"[limits]\nclient_conn = 3", func(c *Config) any { return c.Limits.ClientConn }, 3},
		{"[limits]\nterminate = false", func(c *Config) any { return c.Limits.Terminate }, false},
		{"[limits]\ngreet_pause = \"2s\"", func(c *Config) any { return c.Limits.GreetPause }, 2 * time.Second},
		{"[limits]\ngreet_pause = \"5m\"", func(c *Config) any { return c.Limits.GreetPause }, 5 * time.Minute},
		{"[limits]\nbad_rcpt_throttle = 2", func(c *Config) any { return c.Limits.BadRcptThrottle }, 2},
		{"[limits]\nmax_rcpts_per_message = 25", func(c *Config) any { return c.Limits.MaxRcptsPerMessage }, 25},
		{"[limits]\nmax_message_size = \"10MB\"", func(c *Config) any { return c.Limits.MaxMessageSize }, int64(10_000_000)},
		{"[limits]\nmax_message_size = \"512KiB\"", func(c *Config) any { return c.Limits.MaxMessageSize }, int64(512 << 10)},
		{"[limits]\nmax_message_size = 1048576", func(c *Config) any { return c.Limits.MaxMessageSize }, int64(1 << 20)},
		{"[limits]\nmax_message_size = 0", func(c *Config) any { return c.Limits.MaxMessageSize }, int64(0)},
		{"[limits]\nmax_session_bytes = \"100MiB\"", func(c *Config) any { return c.Limits.MaxSessionBytes }, int64(100 << 20)},
		{"[limits]\nmax_session_bytes = 0", func(c *Config) any { return c.Limits.MaxSessionBytes }, int64(0)},
		{"[limits]\nmax_message_size = \"1GiB\"", func(c *Config) any { return c.Limits.MaxSessionBytes }, int64(2 << 30)},
		{"[limits]\nmax_message_size = \"5000000000GiB\"", func(c *Config) any { return c.Limits.MaxSessionBytes }, int64(0)},
		{"[limits]\nmax_message_size = 0", func(c *Config) any { return c.Limits.MaxSessionBytes }, int64(1 << 30)},
		{"[limits]\nmax_message_size = 0\nmax_session_bytes = 1000", func(c *Config) any { return c.Limits.MaxSessionBytes }, int64(1000)},
		{"[limits]\nmax_session_time = \"30m\"", func(c *Config) any { return c.Limits.MaxSessionTime }, 30 * time.Minute},
		{"[limits]\nmax_session_time = \"0s\"", func(c *Config) any { return c.Limits.MaxSessionTime }, time.Duration(0)},
		{"[timeouts]\ndatafinal = \"1h30m\"", func(c *Config) any { return c.Limits.MaxSessionTime }, 90 * time.Minute},
		{"limits.max_daemon_children = 7", func(c *Config) any { return c.Limits.MaxDaemonChildren }, 7},
		{"limits = { client_conn = 4 }", func(c *Config) any { return c.Limits.ClientConn }, 4},

		{"[timeouts]\ncommand = \"30s\"", func(c *Config) any { return c.Timeouts.Command }, 30 * time.Second},
		{"[timeouts]\nhelo = \"30s\"", func(c *Config) any { return c.Timeouts.Helo }, 30 * time.Second},
		{"[timeouts]\nmail = \"30s\"", func(c *Config) any { return c.Timeouts.Mail }, 30 * time.Second},
		{"[timeouts]\nrcpt = \"30s\"", func(c *Config) any { return c.Timeouts.Rcpt }, 30 * time.Second},
		{"[timeouts]\ndatainit = \"1m\"", func(c *Config) any { return c.Timeouts.DataInit }, time.Minute},
		{"[timeouts]\ndatablock = \"1m\"", func(c *Config) any { return c.Timeouts.DataBlock }, time.Minute},
		{"[timeouts]\ndatafinal = \"1m\"", func(c *Config) any { return c.Timeouts.DataFinal }, time.Minute},
		{"[timeouts]\nrset = \"30s\"", func(c *Config) any { return c.Timeouts.Rset }, 30 * time.Second},
		{"[timeouts]\nquit = \"30s\"", func(c *Config) any { return c.Timeouts.Quit }, 30 * time.Second},
		{"[timeouts]\nmisc = \"30s\"", func(c *Config) any { return c.Timeouts.Misc }, 30 * time.Second},
		{"[timeouts]\nstarttls = \"30s\"", func(c *Config) any { return c.Timeouts.StartTLS }, 30 * time.Second},
		{"[timeouts]\nauth = \"30s\"", func(c *Config) any { return c.Timeouts.Auth }, 30 * time.Second},
		{"[timeouts]\nconnect = \"30s\"", func(c *Config) any { return c.Timeouts.Connect }, 30 * time.Second},
		{"[timeouts]\niconnect = \"30s\"", func(c *Config) any { return c.Timeouts.IConnect }, 30 * time.Second},
		{"[timeouts]\naconnect = \"1m\"", func(c *Config) any { return c.Timeouts.AConnect }, time.Minute},
		{"[timeouts]\ninitial = \"30s\"", func(c *Config) any { return c.Timeouts.Initial }, 30 * time.Second},
		{"[timeouts]\nlhlo = \"30s\"", func(c *Config) any { return c.Timeouts.LHLO }, 30 * time.Second},
		{"[timeouts]\ncontrol = \"30s\"", func(c *Config) any { return c.Timeouts.Control }, 30 * time.Second},
		{"[timeouts]\nhelo = \"0s\"", func(c *Config) any { return c.Timeouts.Helo }, time.Duration(0)},
		{"[timeouts]\nhelo = 0", func(c *Config) any { return c.Timeouts.Helo }, time.Duration(0)},
		{"[timeouts]\ndatafinal = \"1h30m\"", func(c *Config) any { return c.Timeouts.DataFinal }, 90 * time.Minute},

		{"[delivery]\nrelay = \"smtp://mail.example.org:25\"", func(c *Config) any { return c.Delivery.Relay }, "smtp://mail.example.org:25"},
		{"[delivery]\nrelay = \"lmtp://127.0.0.1:24\"", func(c *Config) any { return c.Delivery.Relay }, "lmtp://127.0.0.1:24"},
		{"[delivery]\nrelay = \"lmtp+unix:///run/lmtp\"", func(c *Config) any { return c.Delivery.Relay }, "lmtp+unix:///run/lmtp"},
		{"[delivery]\nqueue_lifetime = \"1d12h\"", func(c *Config) any { return c.Delivery.QueueLifetime }, 36 * time.Hour},

		{"[limits]\nipv4_tiers = [32, 24, 16]\nipv6_tiers = [64]\ntier_multiplier = 2", func(c *Config) any {
			return [3]any{c.Limits.IPv4Tiers, c.Limits.IPv6Tiers, c.Limits.TierMultiplier}
		}, [3]any{[]int{32, 24, 16}, []int{64}, 2}},
		{"[limits]\nmax_bad_rcpts = 5", func(c *Config) any { return c.Limits.MaxBadRcpts }, 5},
		{"[recipients]\nfile = \"r\"\naliases = \"/etc/aliases\"\ncatch_all = true", func(c *Config) any { return c.Recipients },
			Recipients{File: "/etc/mxguard/r", Aliases: "/etc/aliases", CatchAll: true}},
		{"[delivery]\nrelay = \"smtp://h:25\"\nverify = \"probe\"\nverify_positive_ttl = \"2h\"\nverify_negative_ttl = \"5m\"\nverify_max_probes = 3",
			func(c *Config) any {
				return [4]any{c.Delivery.Verify, c.Delivery.VerifyPositiveTTL, c.Delivery.VerifyNegativeTTL, c.Delivery.VerifyMaxProbes}
			},
			[4]any{"probe", 2 * time.Hour, 5 * time.Minute, 8 - 5}},
		{"[admin]\nlisten = \"127.0.0.1:8025\"", func(c *Config) any { return c.Admin.Listen }, "127.0.0.1:8025"},
		{"[admin]\nlisten = \"127.0.0.1:8025\"\nconsole = true\nconsole_token = \"0123456789abcdef\"", func(c *Config) any { return c.Admin },
			Admin{Listen: "127.0.0.1:8025", Console: true, ConsoleToken: "0123456789abcdef"}},
		{"[admin]\nlisten = \"127.0.0.1:8025\"\nconsole = true\nconsole_token_file = \"token\"", func(c *Config) any { return c.Admin.ConsoleTokenFile },
			"/etc/mxguard/token"},
		{"[fleet]\nredis = \"127.0.0.1:6379\"", func(c *Config) any { return c.Fleet.Redis }, "127.0.0.1:6379"},
		{"[fleet]\nredis = \"rediss://user:pw@redis.example.org:6380/2\"", func(c *Config) any { return c.Fleet.Redis }, "rediss://user:pw@redis.example.org:6380/2"},
		{"[fleet]\nredis = \"unix:///run/redis.sock\"", func(c *Config) any { return c.Fleet.Redis }, "unix:///run/redis.sock"},
		{"[fleet]\nkey_prefix = \"mx1:\"", func(c *Config) any { return c.Fleet.KeyPrefix }, "mx1:"},
		{"[fleet]\non_redis_error = \"tempfail\"", func(c *Config) any { return c.Fleet.OnRedisError }, "tempfail"},
		{"[fleet]\nsentinel = [\"10.0.0.5:26379\", \"[2001:db8::5]:26379\", \"s3.example.org:26379\"]\nmaster_name = \"mx\"",
			func(c *Config) any { return c.Fleet.Sentinel.List() }, []string{"10.0.0.5:26379", "[2001:db8::5]:26379", "s3.example.org:26379"}},
		{"[fleet]\nsentinel = [\"10.0.0.5:26379\"]\nmaster_name = \"mx\"\nsentinel_password = \"pw\"",
			func(c *Config) any { return c.Fleet.RedisOptions() },
			redisconn.Options{Sentinel: []string{"10.0.0.5:26379"}, MasterName: "mx", SentinelPassword: "pw"}},
		{"[fleet]\ncluster = [\"10.0.0.5:6379\", \"10.0.0.6:6379\"]", func(c *Config) any { return c.Fleet.RedisOptions() },
			redisconn.Options{Cluster: []string{"10.0.0.5:6379", "10.0.0.6:6379"}}},
		{"[fleet]\nsentinel = []\ncluster = []\nredis = \"h:6379\"", func(c *Config) any { return c.Fleet.RedisOptions() },
			redisconn.Options{Redis: "h:6379"}},
		{"[fleet]\nsentinel = []", func(c *Config) any { return c.Fleet.Shared() }, false},
		{"[fleet]\ncluster = [\"10.0.0.5:6379\"]", func(c *Config) any { return c.Fleet.Shared() }, true},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc), "/etc/mxguard/mxguard.toml")
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestFullExample(t *testing.T) {
	c, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	// The sendmail timeouts mxguard reads but does not use, and only they,
	// are flagged.
	if len(c.Warnings) != 3 || !strings.Contains(strings.Join(c.Warnings, "\n"), "timeouts.auth: accepted for sendmail compatibility") {
		t.Errorf("warnings: %q", c.Warnings)
	}
	want := &Config{
		Hostname:          "mx.example.org",
		Listen:            []string{"192.0.2.25:25", "[2001:db8::25]:25"},
		DataDir:           "/var/lib/mxguard",
		LocalDomains:      []string{"example.org", "example.net"},
		TrustedNetworks:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("192.0.2.0/24")},
		ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("198.51.100.10/32"), netip.MustParsePrefix("2001:db8:10::/64")},
		Resolver:          "127.0.0.1:53",
		AccessMap:         "/etc/mxguard/access",
		HostsAllow:        "/etc/hosts.allow",
		HostsDeny:         "/etc/hosts.deny",
		TLSCert:           "/etc/mxguard/tls/cert.pem",
		TLSKey:            "/etc/mxguard/tls/key.pem",
		Control:           "/run/mxguard/control.sock",
		TrustFile:         "/var/lib/mxguard/trusted.txt",
		DenyFile:          "/var/lib/mxguard/denied.txt",
		DelayChecks:       true,
		LogFormat:         "text",
		Limits: Limits{
			MaxDaemonChildren:        60,
			ConnectionRateThrottle:   5,
			ConnectionRateWindowSize: time.Minute,
			ClientRate:               5,
			ClientConn:               3,
			IPv4Tiers:                []int{32, 24},
			IPv6Tiers:                []int{64, 48},
			TierMultiplier:           4,
			Terminate:                true,
			GreetPause:               2 * time.Second,
			BadRcptThrottle:          2,
			MaxBadRcpts:              20,
			MaxRcptsPerMessage:       25,
			MaxMessageSize:           25 << 20,
			MaxSessionBytes:          1 << 30,
			MaxSessionTime:           time.Hour,
			HardErrorLimit:           20,
			JunkCommandLimit:         100,
		},
		Timeouts: Timeouts{
			Command: 30 * time.Second, Helo: 30 * time.Second, Mail: 30 * time.Second,
			Rcpt: 30 * time.Second, DataInit: time.Minute, DataBlock: time.Minute,
			DataFinal: time.Minute, Rset: 30 * time.Second, Quit: 30 * time.Second,
			Misc: 30 * time.Second, StartTLS: 30 * time.Second, Auth: 30 * time.Second,
			Connect: 30 * time.Second, IConnect: 30 * time.Second, AConnect: time.Minute,
			Initial: 30 * time.Second, LHLO: 30 * time.Second, Control: 30 * time.Second,
		},
		Delivery: Delivery{Relay: "lmtp+unix:///var/run/dovecot/lmtp", QueueLifetime: 5 * 24 * time.Hour,
			Verify: "probe", VerifyPositiveTTL: 24 * time.Hour, VerifyNegativeTTL: time.Hour, VerifyMaxProbes: 8},
		Recipients: Recipients{File: "/etc/mxguard/recipients", Aliases: "/etc/aliases"},
		Admin:      Admin{Listen: "127.0.0.1:8025", Console: true, ConsoleTokenFile: "/etc/mxguard/console-token"},
		Reputation: Reputation{TarpitBelow: -3, TarpitStep: 500 * time.Millisecond, TarpitMax: 5 * time.Second,
			BanBelow: -20, BanTime: time.Hour, ForgiveAfter: 5 * time.Minute, PregreetPoints: -5,
			ProtocolErrorPoints: -2, UnknownUserPoints: -1, NoFCrDNSPoints: -1, MaxClients: 100000},
		Stress: Stress{SessionsPercent: 80, AcceptBacklog: 100, Hold: 1000 * time.Second,
			CommandTimeout: 10 * time.Second, HardErrorLimit: 1, JunkCommandLimit: 1, GreetPause: 2 * time.Second, DNSBLReject: true},
		DNSBL: DNSBL{Sites: []string{"zen.spamhaus.org*2", "bl.spamcop.net*1", "list.dnswl.org=127.0.[0..255].[1..3]*-5"},
			Threshold: 2, AllowlistThreshold: -1, Action: "reject", Timeout: 5 * time.Second,
			MinTTL: time.Minute, MaxTTL: time.Hour, MaxInFlight: 256},
		Fleet: Fleet{Sentinel: "10.0.0.5:26379 10.0.0.6:26379 10.0.0.7:26379", MasterName: "mxguard",
			KeyPrefix: "mxguard:", OnRedisError: "local"},
		Path: "testdata/full.toml",
	}
	want.lines = c.lines       // positions, tested by TestErrors
	want.Warnings = c.Warnings // checked above
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(full.toml) =\n%+v\nwant\n%+v", c, want)
	}
}

func TestErrors(t *testing.T) {
	type want struct {
		line int
		key  string
		msg  string // substring
	}
	tests := []struct {
		name string
		doc  string
		want []want
	}{
		{"syntax", "hostname = \"a\"\nlisten = [\n", []want{{2, "", "array is incomplete"}}},
		{"syntax mid-file", "hostname = \"a\"\n\n[limits\nx = 1\n", []want{{3, "", "expected"}}},
		{"duplicate key", "hostname = \"a\"\n\nhostname = \"b\"\n", []want{{3, "hostname", "already defined"}}},
		{"unknown top-level key", "\nfoo = 1\n", []want{{2, "foo", "unknown key"}}},
		{"unknown key in section", "[limits]\nclient_rate = 1\nclient_rates = 2\n", []want{{3, "limits.client_rates", "unknown key"}}},
		{"unknown table", "[limit]\nclient_rate = 1\n", []want{{1, "limit", "unknown table"}}},
		{"misspelt table", "[Limits]\nclient_rate = 1\n", []want{{1, "Limits", "unknown table; did you mean [limits]?"}}},
		{"unknown nested table", "[limits.extra]\nx = 1\n", []want{{1, "limits.extra", "unknown table"}}},
		{"key in wrong section", "greet_pause = \"2s\"\n", []want{{1, "greet_pause", "did you mean [limits] greet_pause?"}}},
		{"sendmail name", "[limits]\nconfMAX_DAEMON_CHILDREN = 60\n", []want{{2, "limits.confMAX_DAEMON_CHILDREN", "did you mean max_daemon_children?"}}},
		{"sendmail timeout name", "[timeouts]\nconfTO_COMMAND = \"30s\"\n", []want{{2, "timeouts.confTO_COMMAND", "did you mean command?"}}},
		{"top-level key in section", "[limits]\nhostname = \"x\"\n", []want{{2, "limits.hostname", "did you mean hostname (at the top level"}}},
		{"quoted unknown key", "\"a.b\" = 1\n", []want{{1, `"a.b"`, "unknown key"}}},
		{"section not a table", "limits = 5\n", []want{{1, "limits", "must be a table"}}},
		{"array of tables", "[[limits]]\nclient_rate = 1\n", []want{{1, "limits", "must be a table"}}},

		{"hostname type", "hostname = 5\n", []want{{1, "hostname", "must be a string, not an integer"}}},
		{"hostname value", "hostname = \"mx example\"\n", []want{{1, "hostname", "invalid host name"}}},
		{"listen empty", "listen = []\n", []want{{1, "listen", "at least one"}}},
		{"listen string", "listen = \"127.0.0.1:25\"\n", []want{{1, "listen", `write ["127.0.0.1:25"]`}}},
		{"listen bad address", "listen = [\n  \"127.0.0.1:25\",\n  \"127.0.0.1\",\n]\n", []want{{3, "listen", "invalid address"}}},
		{"listen bad port", "listen = [\"127.0.0.1:smtp\"]\n", []want{{1, "listen", "invalid port"}}},
		{"listen big port", "listen = [\"127.0.0.1:65536\"]\n", []want{{1, "listen", "invalid port"}}},
		{"listen bad host", "listen = [\"exa mple:25\"]\n", []want{{1, "listen", "invalid host"}}},
		{"listen element type", "listen = [\n\"127.0.0.1:25\",\n25]\n", []want{{3, "listen", "element 2 must be a string"}}},
		{"listen duplicate", "listen = [\":25\", \":25\"]\n", []want{{1, "listen", "listed twice"}}},
		{"data_dir empty", "data_dir = \"\"\n", []want{{1, "data_dir", "must not be empty"}}},
		{"local_domains bad", "local_domains = [\"example.org\", \"bad domain\"]\n", []want{{1, "local_domains", "invalid domain"}}},
		{"local_domains idn", "local_domains = [\"bücher.example\"]\n", []want{{1, "local_domains", "xn--"}}},
		{"local_domains empty", "local_domains = []\n", []want{{1, "local_domains", "at least one"}}},
		{"bad CIDR", "trusted_networks = [\n\"10.0.0.0/8\",\n\"10.0.0.0/33\",\n\"300.1.1.1\",\n]\n", []want{
			{3, "trusted_networks", `invalid network "10.0.0.0/33"`},
			{4, "trusted_networks", `invalid network "300.1.1.1"`},
		}},
		{"proxy_protocol_from", "\nproxy_protocol_from = [\"10.0.0.0/8\", \"haproxy.example\"]\n", []want{{2, "proxy_protocol_from", `invalid network "haproxy.example"`}}},
		{"proxy_protocol_from string", "proxy_protocol_from = \"10.0.0.0/8\"\n", []want{{1, "proxy_protocol_from", `write ["10.0.0.0/8"]`}}},
		{"resolver", "resolver = \"1.2.3.4:dns\"\n", []want{{1, "resolver", "invalid resolver"}}},
		{"path type", "access_map = true\n", []want{{1, "access_map", "must be a string, not a boolean"}}},
		{"tls_cert alone", "\ntls_cert = \"/c.pem\"\n", []want{{2, "tls_cert", "tls_key is not"}}},
		{"tls_key alone", "\n\ntls_key = \"/k.pem\"\n", []want{{3, "tls_key", "tls_cert is not"}}},
		{"delay_checks type", "delay_checks = \"yes\"\n", []want{{1, "delay_checks", "must be true or false"}}},
		{"log_format", "log_format = \"xml\"\n", []want{{1, "log_format", `must be "text" or "json"`}}},

		{"negative count", "[limits]\nmax_daemon_children = -1\n", []want{{2, "limits.max_daemon_children", "must not be negative"}}},
		{"count type", "[limits]\nclient_rate = \"5\"\n", []want{{2, "limits.client_rate", "must be an integer, not a string"}}},
		{"count float", "[limits]\nclient_conn = 2.5\n", []want{{2, "limits.client_conn", "not a float"}}},
		{"huge count", "[limits]\nclient_conn = 9999999999\n", []want{{2, "limits.client_conn", "more than the largest supported value"}}},
		{"rate beyond the limiter", "[limits]\nclient_rate = 100000\n", []want{{2, "limits.client_rate", "more than the largest supported value, 65536"}}},
		{"bad duration", "[limits]\ngreet_pause = \"2 seconds\"\n", []want{{2, "limits.greet_pause", "invalid duration"}}},
		{"negative duration", "[timeouts]\ncommand = \"-5m\"\n", []want{{2, "timeouts.command", "negative duration"}}},
		{"bare number duration", "[timeouts]\ncommand = 30\n", []want{{2, "timeouts.command", `e.g. "30s"`}}},
		{"duration type", "[timeouts]\ncommand = true\n", []want{{2, "timeouts.command", "not a boolean"}}},
		{"zero command", "[timeouts]\ncommand = \"0s\"\n", []want{{2, "timeouts.command", "at least 1s"}}},
		{"sub-second timeout", "[timeouts]\nrcpt = \"10ms\"\n", []want{{2, "timeouts.rcpt", "too short"}}},
		{"zero window", "[limits]\nconnection_rate_window_size = \"0s\"\n", []want{{2, "limits.connection_rate_window_size", "at least 1s"}}},
		{"date", "[limits]\ngreet_pause = 1979-05-27\n", []want{{2, "limits.greet_pause", "not a date/time"}}},
		{"bad size", "[limits]\nmax_message_size = \"25 MiBs\"\n", []want{{2, "limits.max_message_size", "invalid size unit"}}},
		{"size without number", "[limits]\nmax_message_size = \"MiB\"\n", []want{{2, "limits.max_message_size", "invalid size"}}},
		{"negative size", "[limits]\nmax_message_size = -1\n", []want{{2, "limits.max_message_size", "negative"}}},
		{"size overflow", "[limits]\nmax_message_size = \"99999999999999GiB\"\n", []want{{2, "limits.max_message_size", "too large"}}},
		{"session bytes type", "[limits]\nmax_session_bytes = true\n", []want{{2, "limits.max_session_bytes", "must be a size"}}},
		{"dnsbl sites", "[dnsbl]\nsites = [\"zen.spamhaus.org*2\",\n  \"bad..domain\",\n  \"x.org=127.0.0.300\"]\n", []want{
			{3, "dnsbl.sites", `"bad..domain": bad domain`}, {4, "dnsbl.sites", `"x.org=127.0.0.300": bad filter`}}},
		{"dnsbl same site twice", "[dnsbl]\nsites = [\"a.example\", \"a.example*3\"]\n", []want{{2, "dnsbl.sites", "a.example"}}},
		{"dnsbl threshold", "[dnsbl]\nthreshold = 0\n", []want{{2, "dnsbl.threshold", "must be at least 1"}}},
		{"dnsbl action", "[dnsbl]\naction = \"drop\"\n", []want{{2, "dnsbl.action", `must be "reject", "reject_rcpt" or "score"`}}},
		{"dnsbl allowlist positive", "[dnsbl]\nallowlist_threshold = 2\n", []want{{2, "dnsbl.allowlist_threshold", "must be 0 or negative"}}},
		{"session bytes under message", "[limits]\nmax_message_size = \"25MiB\"\n\nmax_session_bytes = \"40MiB\"\n", []want{{4, "limits.max_session_bytes", "40MiB is less than twice max_message_size (25MiB)"}}},
		{"session time short", "[limits]\nmax_session_time = \"500ms\"\n", []want{{2, "limits.max_session_time", "too short"}}},
		{"session time under datafinal", "[limits]\nmax_session_time = \"5m\"\n", []want{{2, "limits.max_session_time", "5m is less than timeouts.datafinal (10m)"}}},

		{"relay scheme", "[delivery]\nrelay = \"http://x:80\"\n", []want{{2, "delivery.relay", "invalid relay"}}},
		{"relay no port", "[delivery]\nrelay = \"smtp://mail.example.org\"\n", []want{{2, "delivery.relay", "no port"}}},
		{"relay path", "[delivery]\nrelay = \"lmtp://h:24/x\"\n", []want{{2, "delivery.relay", "must not have a path"}}},
		{"relay unix relative", "[delivery]\nrelay = \"lmtp+unix://run/lmtp\"\n", []want{{2, "delivery.relay", "absolute socket path"}}},
		{"relay user", "[delivery]\nrelay = \"smtp://u:p@h:25\"\n", []want{{2, "delivery.relay", "user info"}}},
		{"relay no scheme", "[delivery]\nrelay = \"mail.example.org:25\"\n", []want{{2, "delivery.relay", "invalid relay"}}},
		{"queue_lifetime", "[delivery]\nqueue_lifetime = \"1.5d\"\n", []want{{2, "delivery.queue_lifetime", "invalid duration"}}},

		{"points sign", "[reputation]\nban_below = 20\n", []want{{2, "reputation.ban_below", "must be 0 or negative"}}},
		{"tiers order", "[limits]\nipv4_tiers = [24, 32]\n", []want{{2, "limits.ipv4_tiers", "must be shorter than the one before it"}}},
		{"tiers range", "[limits]\nipv6_tiers = [129]\n", []want{{2, "limits.ipv6_tiers", "from 1 to 128"}}},
		{"tiers empty", "[limits]\nipv4_tiers = []\n", []want{{2, "limits.ipv4_tiers", "at least one"}}},
		{"verify value", "[delivery]\nverify = \"smtp\"\n", []want{{2, "delivery.verify", `must be "probe" or ""`}}},
		{"verify without relay", "[delivery]\n\nverify = \"probe\"\n", []want{{3, "delivery.verify", "delivery.relay is not set"}}},
		{"verify without probes", "[delivery]\nrelay = \"smtp://h:25\"\nverify = \"probe\"\nverify_max_probes = 0\n", []want{{4, "delivery.verify_max_probes", "at least 1"}}},
		{"catch_all type", "[recipients]\ncatch_all = \"yes\"\n", []want{{2, "recipients.catch_all", "must be true or false"}}},
		{"admin listen", "[admin]\nlisten = \"8025\"\n", []want{{2, "admin.listen", "invalid address"}}},
		{"console without listener", "[admin]\nconsole = true\n", []want{{2, "admin.console", "admin.listen is not set"}}},
		{"console token short", "[admin]\nconsole_token = \"secret\"\n", []want{{2, "admin.console_token", "at least 16 characters, not 6"}}},
		{"console token space", "[admin]\nconsole_token = \"0123456789 abcdef\"\n", []want{{2, "admin.console_token", "without spaces"}}},
		{"console token twice", "[admin]\nconsole_token = \"0123456789abcdef\"\nconsole_token_file = \"/t\"\n", []want{{3, "admin.console_token_file", "set one or the other"}}},
		{"redis", "[fleet]\nredis = \"localhost\"\n", []want{{2, "fleet.redis", "invalid redis address"}}},
		{"redis scheme", "[fleet]\nredis = \"http://localhost:6379\"\n", []want{{2, "fleet.redis", "scheme"}}},
		{"on_redis_error", "[fleet]\non_redis_error = \"ignore\"\n", []want{{2, "fleet.on_redis_error", `must be "local" or "tempfail"`}}},
		{"redis and sentinel", "[fleet]\nredis = \"10.0.0.5:6379\"\nsentinel = [\"10.0.0.5:26379\"]\nmaster_name = \"mx\"\n",
			[]want{{3, "fleet.sentinel", "fleet.redis is set too: set only one of fleet.redis, fleet.sentinel and fleet.cluster"}}},
		{"all three", "[fleet]\nredis = \"10.0.0.5:6379\"\nsentinel = [\"10.0.0.5:26379\"]\nmaster_name = \"mx\"\ncluster = [\"10.0.0.6:6379\"]\n",
			[]want{{3, "fleet.sentinel", "fleet.redis is set too"}, {5, "fleet.cluster", "fleet.redis is set too"}}},
		{"sentinel and cluster", "[fleet]\ncluster = [\"10.0.0.6:6379\"]\nsentinel = [\"10.0.0.5:26379\"]\nmaster_name = \"mx\"\n",
			[]want{{2, "fleet.cluster", "fleet.sentinel is set too"}}},
		{"sentinel without master_name", "[fleet]\nsentinel = [\"10.0.0.5:26379\"]\n", []want{{2, "fleet.sentinel", "needs fleet.master_name"}}},
		{"master_name without sentinel", "[fleet]\nmaster_name = \"mx\"\n", []want{{2, "fleet.master_name", "fleet.sentinel is not"}}},
		{"sentinel_password without sentinel", "[fleet]\nredis = \"h:1\"\nsentinel_password = \"pw\"\n", []want{{3, "fleet.sentinel_password", "fleet.sentinel is not"}}},
		{"master_name words", "[fleet]\nsentinel = [\"h:26379\"]\nmaster_name = \"my master\"\n", []want{{3, "fleet.master_name", "one word"}}},
		{"sentinel address", "[fleet]\nmaster_name = \"mx\"\nsentinel = [\n  \"h:26379\",\n  \"localhost\",\n]\n", []want{{5, "fleet.sentinel", "invalid address"}}},
		{"sentinel twice", "[fleet]\nmaster_name = \"mx\"\nsentinel = [\"h:26379\", \"h:26379\"]\n", []want{{3, "fleet.sentinel", "listed twice"}}},
		{"sentinel string", "[fleet]\nmaster_name = \"mx\"\nsentinel = \"h:26379\"\n", []want{{3, "fleet.sentinel", `write ["h:26379"]`}}},
		{"cluster port", "[fleet]\ncluster = [\"h:0\"]\n", []want{{2, "fleet.cluster", "port 0"}}},
		{"cluster brace prefix", "[fleet]\ncluster = [\"h:6379\"]\nkey_prefix = \"{mx}:\"\n", []want{{3, "fleet.key_prefix", "one shard"}}},

		{"every error at once", `hostname = "ok.example"
bogus = 1
listen = []
[limits]
max_daemon_children = "sixty"
greet_pause = "forever"
[timeouts]
datablock = "-1m"
[delivery]
relay = "ftp://x"
[fleet]
on_redis_error = "panic"
`, []want{
			{2, "bogus", "unknown key"},
			{3, "listen", "at least one"},
			{5, "limits.max_daemon_children", "must be an integer"},
			{6, "limits.greet_pause", "invalid duration"},
			{8, "timeouts.datablock", "negative"},
			{10, "delivery.relay", "invalid relay"},
			{12, "fleet.on_redis_error", "must be"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := parseErrors(t, tt.doc)
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(tt.want), errs)
			}
			for i, w := range tt.want {
				e := errs[i]
				if e.Line != w.line || e.Key != w.key || !strings.Contains(e.Msg, w.msg) || e.File != "test.toml" {
					t.Errorf("error %d = %+v, want line %d key %q msg containing %q", i, e, w.line, w.key, w.msg)
				}
			}
		})
	}
}

func TestErrorsFormat(t *testing.T) {
	_, err := Parse([]byte("[fleet]\non_redis_error = \"x\"\n\nnope = 1\n"), "/etc/mx.toml")
	if err == nil {
		t.Fatal("no error")
	}
	want := "/etc/mx.toml:2: fleet.on_redis_error: must be \"local\" or \"tempfail\", not \"x\"\n" +
		"/etc/mx.toml:4: fleet.nope: unknown key"
	if got := err.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}

	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f", Line: 3, Key: "k", Msg: "m"}, "f:3: k: m"},
		{Error{File: "f", Key: "k", Msg: "m"}, "f: k: m"},
		{Error{Line: 3, Key: "k", Msg: "m"}, "line 3: k: m"},
		{Error{Msg: "m"}, "m"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}

	var one Error
	if !errors.As(err, &one) || one.Line != 2 {
		t.Errorf("errors.As(Errors, *Error) = %+v", one)
	}
}

func TestGreetPauseClamped(t *testing.T) {
	c := parse(t, "[limits]\n\ngreet_pause = \"10m\"\n")
	if c.Limits.GreetPause != MaxGreetPause {
		t.Errorf("GreetPause = %v, want %v", c.Limits.GreetPause, MaxGreetPause)
	}
	want := []string{"test.toml:3: limits.greet_pause: 10m exceeds the RFC 5321 greeting timeout; using 5m"}
	if !slices.Equal(c.Warnings, want) {
		t.Errorf("Warnings = %q, want %q", c.Warnings, want)
	}
}

func TestRelativePaths(t *testing.T) {
	doc := `data_dir = "spool"
access_map = "access"
hosts_allow = "/etc/hosts.allow"
hosts_deny = "../hosts.deny"
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
deny_file = "denied"
`
	c, err := Parse([]byte(doc), "/etc/mxguard/mxguard.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, ck := range []struct{ name, got, want string }{
		{"DataDir", c.DataDir, "/etc/mxguard/spool"},
		{"AccessMap", c.AccessMap, "/etc/mxguard/access"},
		{"HostsAllow", c.HostsAllow, "/etc/hosts.allow"},
		{"HostsDeny", c.HostsDeny, "/etc/hosts.deny"},
		{"TLSCert", c.TLSCert, "/etc/mxguard/tls/cert.pem"},
		{"TLSKey", c.TLSKey, "/etc/mxguard/tls/key.pem"},
		{"Control", c.Control, "/etc/mxguard/spool/control.sock"},
		{"TrustFile", c.TrustFile, "/etc/mxguard/spool/trusted.txt"},
		{"DenyFile", c.DenyFile, "/etc/mxguard/denied"},
	} {
		if ck.got != ck.want {
			t.Errorf("%s = %q, want %q", ck.name, ck.got, ck.want)
		}
	}

	// Without a file name there is nothing to be relative to.
	c, err = Parse([]byte(`access_map = "access"`), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessMap != "access" {
		t.Errorf("AccessMap = %q, want %q", c.AccessMap, "access")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mxguard.toml")
	if err := os.WriteFile(path, []byte("access_map = \"access\"\n[limits]\nclient_rate = 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != path || c.Limits.ClientRate != 5 || c.AccessMap != filepath.Join(dir, "access") {
		t.Errorf("Load = %+v", c)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want fs.ErrNotExist", err)
	}
	var errs Errors
	if errors.As(err, &errs) {
		t.Errorf("Load(missing) error is Errors, want the file system's")
	}
}

func TestRelayTarget(t *testing.T) {
	for _, tt := range []struct {
		relay, proto, network, address string
	}{
		{"", "", "", ""},
		{"smtp://mail.example.org:25", "smtp", "tcp", "mail.example.org:25"},
		{"lmtp://[::1]:24", "lmtp", "tcp", "[::1]:24"},
		{"lmtp+unix:///run/dovecot/lmtp", "lmtp", "unix", "/run/dovecot/lmtp"},
		{"bogus", "", "", ""},
	} {
		proto, network, address := Delivery{Relay: tt.relay}.RelayTarget()
		if proto != tt.proto || network != tt.network || address != tt.address {
			t.Errorf("RelayTarget(%q) = %q, %q, %q; want %q, %q, %q", tt.relay, proto, network, address, tt.proto, tt.network, tt.address)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"1m", time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"250ms", 250 * time.Millisecond, true},
		{"5d", 5 * day, true},
		{"1d12h", 36 * time.Hour, true},
		{"+2s", 2 * time.Second, true},
		{"0", 0, true},
		{"", 0, false},
		{"-1s", 0, false},
		{"1d-1h", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"1h2d", 0, false},
		{"5", 0, false},
		{"1w", 0, false},
		{"999999999d", 0, false},
		{"106751d24h", 0, false},
	} {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tt := range []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{30 * time.Second, "30s"},
		{time.Minute, "1m"},
		{90 * time.Minute, "1h30m"},
		{5 * day, "5d"},
		{36 * time.Hour, "1d12h"},
		{day + time.Second, "1d1s"},
		{1500 * time.Millisecond, "1.5s"},
		{2 * time.Second / 1000, "2ms"},
	} {
		got := FormatDuration(tt.in)
		if got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParseDuration(got)
		if err != nil || back != tt.in {
			t.Errorf("ParseDuration(FormatDuration(%v)) = %v, %v", tt.in, back, err)
		}
	}
}

func TestSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"25MiB", 25 << 20, true},
		{"10MB", 10_000_000, true},
		{"512KiB", 512 << 10, true},
		{"512 kib", 512 << 10, true},
		{"1GB", 1_000_000_000, true},
		{"2GiB", 2 << 30, true},
		{"100B", 100, true},
		{"1048576", 1 << 20, true},
		{"0", 0, true},
		{"", 0, false},
		{"MB", 0, false},
		{"10M", 0, false},
		{"1.5MB", 0, false},
		{"-1", 0, false},
		{"9223372036854775808", 0, false},
		{"9223372036854775807KB", 0, false},
	} {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	for _, n := range []int64{0, 1, 1000, 1024, 25 << 20, 3 << 30, 1<<20 + 1} {
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, FormatSize(n), back, err)
		}
	}
	if got := FormatSize(25 << 20); got != "25MiB" {
		t.Errorf("FormatSize(25MiB) = %q", got)
	}
}

func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data, "full.toml"); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParse(f *testing.F) {
	full, err := os.ReadFile("testdata/full.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte("listen = [\n\"a\",\n 3]\n[limits]\ngreet_pause = \"10m\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c, err)
		}
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T %v is not a non-empty Errors", err, err)
			}
			return
		}
		// A configuration that parses is usable: the invariants the server
		// relies on hold.
		if len(c.Listen) == 0 || len(c.LocalDomains) == 0 || c.DataDir == "" {
			t.Fatalf("accepted config lacks listen, local_domains or data_dir: %+v", c)
		}
		if (c.TLSCert == "") != (c.TLSKey == "") {
			t.Fatalf("accepted config has only one of tls_cert and tls_key")
		}
		if c.Limits.GreetPause > MaxGreetPause || c.Limits.GreetPause < 0 {
			t.Fatalf("greet pause %v out of range", c.Limits.GreetPause)
		}
	})
}

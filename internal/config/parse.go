package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/mxguard/mxguard/internal/dnsbl"
)

// parser applies one decoded document to a Config, collecting every error.
type parser struct {
	cfg   *Config
	data  []byte
	file  string
	lines map[string]int
	errs  Errors

	// The key being applied, for errors and warnings raised by setters.
	key string
	// Keys seen, by name, for the checks that relate several keys.
	seen map[string]bool
}

func newParser(c *Config, data []byte, file string) *parser {
	return &parser{cfg: c, data: data, file: file, seen: make(map[string]bool)}
}

func (p *parser) run() {
	// The document is decoded by go-toml first, so that TOML's own rules
	// (syntax, duplicate keys, redefined tables) are go-toml's, not ours.
	var doc map[string]any
	if err := toml.Unmarshal(p.data, &doc); err != nil {
		p.tomlError(err)
		return
	}
	p.lines = keyLines(p.data)

	for _, k := range sortedKeys(doc) {
		v := doc[k]
		if isSection(k) {
			tbl, ok := v.(map[string]any)
			if !ok {
				p.errorf(k, "must be a table ([%s]), not %s", k, typeName(v))
				continue
			}
			for _, sk := range sortedKeys(tbl) {
				p.apply(k, sk, tbl[sk])
			}
			continue
		}
		p.apply("", k, v)
	}
	p.finish()
}

// tomlError reports a document go-toml could not decode. Decoding stops at
// the first such error, so there is only ever one.
func (p *parser) tomlError(err error) {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		p.errs = append(p.errs, Error{
			File: p.file,
			Line: line,
			Key:  keyName(de.Key()),
			Msg:  strings.TrimPrefix(de.Error(), "toml: "),
		})
		return
	}
	p.errs = append(p.errs, Error{File: p.file, Msg: err.Error()})
}

func (p *parser) apply(section, k string, v any) {
	name := keyName([]string{k})
	if section != "" {
		name = section + "." + name
	}
	key := lookupKey(section, k)
	if key == nil {
		msg := unknownKeyMsg(section, k)
		if _, isTable := v.(map[string]any); isTable {
			msg = strings.Replace(msg, "unknown key", "unknown table", 1)
		}
		p.errorf(name, "%s", msg)
		return
	}
	p.key = name
	p.seen[name] = true
	if err := key.set(p, v); err != nil {
		p.errorf(name, "%v", err)
		return
	}
	if key.Unused != "" {
		p.warnf("accepted for sendmail compatibility, but has no effect: %s", key.Unused)
	}
}

func (p *parser) line(key string) int {
	return p.lines[key]
}

func (p *parser) errorf(key, format string, args ...any) {
	p.errorAt(p.line(key), key, fmt.Sprintf(format, args...))
}

func (p *parser) errorAt(line int, key, msg string) {
	p.errs = append(p.errs, Error{File: p.file, Line: line, Key: key, Msg: msg})
}

// warnAt records a note about key, found after parsing.
func (p *parser) warnAt(key, format string, args ...any) {
	e := Error{File: p.file, Line: p.line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
	p.cfg.Warnings = append(p.cfg.Warnings, e.Error())
}

// warnf records a note about the key being applied.
func (p *parser) warnf(format string, args ...any) {
	e := Error{File: p.file, Line: p.line(p.key), Key: p.key, Msg: fmt.Sprintf(format, args...)}
	p.cfg.Warnings = append(p.cfg.Warnings, e.Error())
}

// finish runs the checks that involve several keys, and resolves paths.
func (p *parser) finish() {
	c := p.cfg
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		p.errorf("tls_cert", "is set but tls_key is not; set both or neither")
	case c.TLSKey != "" && c.TLSCert == "":
		p.errorf("tls_key", "is set but tls_cert is not; set both or neither")
	}
	p.checkSessionLimits()
	if a := c.Admin.Listen; a != "" {
		if host, _, err := net.SplitHostPort(a); err == nil {
			if ip, err := netip.ParseAddr(host); host == "" || err == nil && !ip.IsLoopback() {
				p.warnAt("admin.listen", "%s is not a loopback address: the network can read the traffic figures", a)
			}
		}
	}
	switch {
	case c.Admin.Console && c.Admin.Listen == "":
		p.errorf("admin.console", "is true but admin.listen is not set: the console is served on the admin listener")
	case c.Admin.ConsoleToken != "" && c.Admin.ConsoleTokenFile != "":
		p.errorf("admin.console_token_file", "is set as well as admin.console_token; set one or the other")
	}
	switch {
	case c.Delivery.Verify == VerifyProbe && c.Delivery.Relay == "":
		p.errorf("delivery.verify", "is %q but delivery.relay is not set: there is nobody to ask", VerifyProbe)
	case c.Delivery.Verify == VerifyProbe && c.Delivery.VerifyMaxProbes == 0:
		p.errorf("delivery.verify_max_probes", "must be at least 1 with verify = %q", VerifyProbe)
	}

	p.checkFleet()

	if p.file != "" {
		// Relative paths in a file are relative to the file.
		dir := filepath.Dir(p.file)
		for i := range schema {
			k := &schema[i]
			if k.str == nil || !p.seen[k.Name] {
				continue
			}
			if path := k.str(c); *path != "" && !filepath.IsAbs(*path) {
				*path = filepath.Join(dir, *path)
			}
		}
	}
	c.deriveDataPaths()
}

// checkFleet makes sure that [fleet] names one Redis, and all that it
// needs: a client of two would have to choose, and a Sentinel setup without
// its master name has no primary to ask for.
func (p *parser) checkFleet() {
	f := &p.cfg.Fleet
	// A key whose value was refused counts as given: its own error is
	// the one to fix, not a second one about what it leaves missing.
	given := func(key string, v string) bool {
		return v != "" || p.seen[key] && slices.ContainsFunc(p.errs, func(e Error) bool { return e.Key == key })
	}
	redis, sentinel, cluster := given("fleet.redis", f.Redis), given("fleet.sentinel", string(f.Sentinel)), given("fleet.cluster", string(f.Cluster))
	var set []string
	for _, k := range []struct {
		name string
		on   bool
	}{{"fleet.redis", redis}, {"fleet.sentinel", sentinel}, {"fleet.cluster", cluster}} {
		if k.on {
			set = append(set, k.name)
		}
	}
	for _, k := range set[min(1, len(set)):] {
		p.errorf(k, "%s is set too: set only one of fleet.redis, fleet.sentinel and fleet.cluster", set[0])
	}
	master := given("fleet.master_name", f.MasterName)
	switch {
	case sentinel && !master:
		p.errorf("fleet.sentinel", "needs fleet.master_name: the name the Sentinels monitor the primary under")
	case !sentinel && master:
		p.errorf("fleet.master_name", "is set but fleet.sentinel is not: name the Sentinels that watch %q", f.MasterName)
	}
	if !sentinel && f.SentinelPassword != "" {
		p.errorf("fleet.sentinel_password", "is set but fleet.sentinel is not")
	}
	if f.Cluster != "" && strings.ContainsAny(f.KeyPrefix, "{}") {
		p.errorf("fleet.key_prefix", "%q holds a brace: with fleet.cluster a hash tag in the prefix would put every key on one shard", f.KeyPrefix)
	}
}

// checkSessionLimits makes sure that a session can carry one message of
// the largest size, taking the longest the timeouts allow: otherwise its
// sender would be cut off with 421, and would retry in vain, every time. A
// default is raised to fit; a value set in the file that does not fit is an
// error. Twice max_message_size leaves room for the session's commands and
// TLS framing without a formula that depends on them.
func (p *parser) checkSessionLimits() {
	l, c := &p.cfg.Limits, p.cfg
	if need := l.MaxMessageSize; l.MaxSessionBytes > 0 && need > 0 && l.MaxSessionBytes/2 < need {
		switch {
		case p.seen["limits.max_session_bytes"]:
			p.errorf("limits.max_session_bytes", "%s is less than twice max_message_size (%s): a message of the largest size would not fit in a session",
				FormatSize(l.MaxSessionBytes), FormatSize(need))
		case need > math.MaxInt64/2:
			l.MaxSessionBytes = 0
		default:
			l.MaxSessionBytes = 2 * need
		}
	}
	if need := c.Timeouts.DataFinal; l.MaxSessionTime > 0 && l.MaxSessionTime < need {
		if p.seen["limits.max_session_time"] {
			p.errorf("limits.max_session_time", "%s is less than timeouts.datafinal (%s): a message whose body takes all the time allowed would not fit in a session",
				FormatDuration(l.MaxSessionTime), FormatDuration(need))
		} else {
			l.MaxSessionTime = need
		}
	}
}

// A setter checks one value and stores it in the Config. Its error text
// becomes the message after "FILE:LINE: key: ".
type setter func(p *parser, v any) error

func checkHostname(s string) (string, error) {
	if !isHostname(s) {
		return "", fmt.Errorf("invalid host name %q", s)
	}
	return s, nil
}

func checkResolver(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	return normalizeResolver(s)
}

func checkRelay(s string) (string, error) {
	_, err := parseRelay(s)
	return s, err
}

func checkLogFormat(s string) (string, error) {
	if s != LogText && s != LogJSON {
		return "", fmt.Errorf("must be %q or %q, not %q", LogText, LogJSON, s)
	}
	return s, nil
}

func checkDNSBLAction(s string) (string, error) {
	switch s {
	case DNSBLReject, DNSBLRejectRcpt, DNSBLScore:
		return s, nil
	}
	return "", fmt.Errorf("must be %q, %q or %q, not %q", DNSBLReject, DNSBLRejectRcpt, DNSBLScore, s)
}

// setDNSBLSites checks each entry with the DNSBL engine's own parser, so
// that an error names its line, then the list as a whole (the same site
// twice).
func setDNSBLSites(p *parser, v any) error {
	var sites []string
	ok, err := stringList(p, v, func(_ int, s string) error {
		if _, err := dnsbl.ParseSites([]string{s}); err != nil {
			var se *dnsbl.SiteError
			if errors.As(err, &se) {
				return fmt.Errorf("%q: %v", s, se.Err)
			}
			return err
		}
		sites = append(sites, s)
		return nil
	})
	if err != nil || !ok {
		return err
	}
	if _, err := dnsbl.ParseSites(sites); err != nil {
		return err
	}
	p.cfg.DNSBL.Sites = sites
	return nil
}

// thresholdVal is a DNSBL score threshold: at least 1, as a listing needs
// a positive weight.
func thresholdVal(field func(*Config) *int) setter {
	return func(p *parser, v any) error {
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("must be an integer, not %s", typeName(v))
		}
		if n < 1 || n > 1_000_000 {
			return fmt.Errorf("must be at least 1, not %d", n)
		}
		*field(p.cfg) = int(n)
		return nil
	}
}

func checkAdminListen(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	return s, checkHostPort(s, true, true)
}

func checkConsoleTokenValue(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	return s, CheckConsoleToken(s)
}

// MinConsoleToken is the shortest console token accepted.
const MinConsoleToken = 16

// CheckConsoleToken checks a console token, from the file or from a
// console_token_file: at least MinConsoleToken printable characters, no
// spaces, so that it cannot be guessed in a few tries and survives being
// copied into a header.
func CheckConsoleToken(s string) error {
	if len(s) < MinConsoleToken {
		return fmt.Errorf("the token must be at least %d characters, not %d; make one with `openssl rand -hex 32`", MinConsoleToken, len(s))
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r > '~' {
			return errors.New("the token must be printable ASCII without spaces; make one with `openssl rand -hex 32`")
		}
	}
	return nil
}

func checkVerify(s string) (string, error) {
	if s != VerifyNone && s != VerifyProbe {
		return "", fmt.Errorf("must be %q or %q, not %q", VerifyProbe, VerifyNone, s)
	}
	return s, nil
}

func checkRedisValue(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	return s, checkRedis(s)
}

// addrsVal sets a list of host:port addresses, each checked on its own
// line; the same address twice is an error.
func addrsVal(field func(*Config) *Addrs) setter {
	return func(p *parser, v any) error {
		var addrs []string
		ok, err := stringList(p, v, func(_ int, s string) error {
			if err := checkHostPort(s, false, false); err != nil {
				return err
			}
			if slices.Contains(addrs, s) {
				return fmt.Errorf("%q is listed twice", s)
			}
			addrs = append(addrs, s)
			return nil
		})
		if err != nil || !ok {
			return err
		}
		*field(p.cfg) = Addrs(strings.Join(addrs, " "))
		return nil
	}
}

func checkMasterName(s string) (string, error) {
	if strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return "", fmt.Errorf("%q must be one word, as in sentinel monitor NAME", s)
	}
	return s, nil
}

func checkOnRedisError(s string) (string, error) {
	if s != OnRedisErrorLocal && s != OnRedisErrorTempfail {
		return "", fmt.Errorf("must be %q or %q, not %q", OnRedisErrorLocal, OnRedisErrorTempfail, s)
	}
	return s, nil
}

// typeName names a decoded TOML value's type as the TOML spec does.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return "a date/time"
	}
}

func stringVal(field func(*Config) *string, check func(string) (string, error)) setter {
	return func(p *parser, v any) error {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("must be a string, not %s", typeName(v))
		}
		if check != nil {
			var err error
			if s, err = check(s); err != nil {
				return err
			}
		}
		*field(p.cfg) = s
		return nil
	}
}

// pathVal sets a path; "" (none) only where allowEmpty.
func pathVal(field func(*Config) *string, allowEmpty bool) setter {
	return stringVal(field, func(s string) (string, error) {
		if s == "" && !allowEmpty {
			return "", errors.New("must not be empty")
		}
		if strings.IndexByte(s, 0) >= 0 {
			return "", errors.New("path contains a NUL byte")
		}
		return s, nil
	})
}

func boolVal(field func(*Config) *bool) setter {
	return func(p *parser, v any) error {
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("must be true or false, not %s", typeName(v))
		}
		*field(p.cfg) = b
		return nil
	}
}

// intVal sets a count, where 0 means no limit. max, when not 0, is the
// largest value the code that applies the count supports.
func intVal(field func(*Config) *int, max int) setter {
	if max == 0 {
		max = math.MaxInt32
	}
	return func(p *parser, v any) error {
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("must be an integer, not %s", typeName(v))
		}
		if n < 0 {
			return fmt.Errorf("must not be negative (0 means no limit), not %d", n)
		}
		if n > int64(max) {
			return fmt.Errorf("%d is more than the largest supported value, %d", n, max)
		}
		*field(p.cfg) = int(n)
		return nil
	}
}

// pointsVal sets a score or a cost: an integer, 0 or negative (bad
// behaviour lowers a score).
func pointsVal(field func(*Config) *int) setter {
	return func(p *parser, v any) error {
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("must be an integer, not %s", typeName(v))
		}
		if n > 0 || n < -1_000_000 {
			return fmt.Errorf("must be 0 or negative (scores go down for bad behaviour), not %d", n)
		}
		*field(p.cfg) = int(n)
		return nil
	}
}

// durationString extracts a duration from a TOML value. Durations are
// strings so that the unit is always written down; a bare 0 is accepted
// because it needs none.
func durationString(v any) (time.Duration, error) {
	switch v := v.(type) {
	case string:
		return ParseDuration(v)
	case int64:
		if v == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("must be a duration string with a unit, e.g. \"%ds\", not a bare number", v)
	}
	return 0, fmt.Errorf("must be a duration string like \"30s\", not %s", typeName(v))
}

// durationVal sets a duration that must be at least min (so never 0).
func durationVal(field func(*Config) *time.Duration, min time.Duration) setter {
	return func(p *parser, v any) error {
		d, err := durationString(v)
		if err != nil {
			return err
		}
		if d < min {
			return fmt.Errorf("must be at least %s", FormatDuration(min))
		}
		*field(p.cfg) = d
		return nil
	}
}

// timeoutVal sets a per-phase timeout, where 0 means "as command".
func timeoutVal(field func(*Config) *time.Duration) setter {
	return func(p *parser, v any) error {
		d, err := durationString(v)
		if err != nil {
			return err
		}
		if d != 0 && d < time.Second {
			return fmt.Errorf("%s is too short to be meant; timeouts are at least 1s (0 means as command)", FormatDuration(d))
		}
		*field(p.cfg) = d
		return nil
	}
}

func setGreetPause(p *parser, v any) error {
	d, err := durationString(v)
	if err != nil {
		return err
	}
	if d > MaxGreetPause {
		p.warnf("%s exceeds the RFC 5321 greeting timeout; using %s", FormatDuration(d), FormatDuration(MaxGreetPause))
		d = MaxGreetPause
	}
	p.cfg.Limits.GreetPause = d
	return nil
}

// sizeVal sets a size in bytes, where 0 means no limit.
func sizeVal(field func(*Config) *int64) setter {
	return func(p *parser, v any) error {
		var n int64
		switch v := v.(type) {
		case int64:
			if v < 0 {
				return fmt.Errorf("must not be negative (0 means no limit), not %d", v)
			}
			n = v
		case string:
			var err error
			if n, err = ParseSize(v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("must be a size like \"25MiB\" or a byte count, not %s", typeName(v))
		}
		*field(p.cfg) = n
		return nil
	}
}

// limitDurationVal sets a duration limit, where 0 means no limit.
func limitDurationVal(field func(*Config) *time.Duration) setter {
	return func(p *parser, v any) error {
		d, err := durationString(v)
		if err != nil {
			return err
		}
		if d != 0 && d < time.Second {
			return fmt.Errorf("%s is too short to be meant; at least 1s (0 means no limit)", FormatDuration(d))
		}
		*field(p.cfg) = d
		return nil
	}
}

// stringList extracts an array of strings, reporting each bad element on
// its own line.
func stringList(p *parser, v any, each func(i int, s string) error) (ok bool, err error) {
	list, isList := v.([]any)
	if !isList {
		if _, isString := v.(string); isString {
			return false, fmt.Errorf("must be an array of strings; write [%q]", v)
		}
		return false, fmt.Errorf("must be an array of strings, not %s", typeName(v))
	}
	ok = true
	for i, e := range list {
		elem := p.key + "[" + strconv.Itoa(i) + "]"
		line := p.line(elem)
		if line == 0 {
			line = p.line(p.key)
		}
		s, isString := e.(string)
		if !isString {
			p.errorAt(line, p.key, fmt.Sprintf("element %d must be a string, not %s", i+1, typeName(e)))
			ok = false
			continue
		}
		if err := each(i, s); err != nil {
			p.errorAt(line, p.key, err.Error())
			ok = false
		}
	}
	return ok, nil
}

// tiersVal sets a list of prefix lengths, each in [1, max], strictly
// narrowing: the client's own first, then wider networks.
func tiersVal(field func(*Config) *[]int, max int) setter {
	return func(p *parser, v any) error {
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("must be an array of prefix lengths like [%d, %d], not %s", max, max/4*3, typeName(v))
		}
		if len(list) == 0 {
			return errors.New("must list at least one prefix length (the client's own)")
		}
		var out []int
		for i, e := range list {
			n, ok := e.(int64)
			if !ok || n < 1 || n > int64(max) {
				return fmt.Errorf("element %d must be a prefix length from 1 to %d", i+1, max)
			}
			if len(out) > 0 && int(n) >= out[len(out)-1] {
				return fmt.Errorf("element %d (%d) must be shorter than the one before it: narrowest first", i+1, n)
			}
			out = append(out, int(n))
		}
		*field(p.cfg) = out
		return nil
	}
}

func setListen(p *parser, v any) error {
	var addrs []string
	seen := make(map[string]bool)
	ok, err := stringList(p, v, func(_ int, s string) error {
		if err := checkHostPort(s, true, true); err != nil {
			return err
		}
		if seen[s] {
			return fmt.Errorf("%q is listed twice", s)
		}
		seen[s] = true
		addrs = append(addrs, s)
		return nil
	})
	if err != nil || !ok {
		return err
	}
	if len(addrs) == 0 {
		return errors.New("must list at least one address")
	}
	p.cfg.Listen = addrs
	return nil
}

func setLocalDomains(p *parser, v any) error {
	var domains []string
	seen := make(map[string]bool)
	ok, err := stringList(p, v, func(_ int, s string) error {
		d, err := normalizeDomain(s)
		if err != nil {
			return err
		}
		if !seen[d] {
			seen[d] = true
			domains = append(domains, d)
		}
		return nil
	})
	if err != nil || !ok {
		return err
	}
	if len(domains) == 0 {
		return errors.New("must list at least one domain")
	}
	p.cfg.LocalDomains = domains
	return nil
}

func setTrustedNetworks(p *parser, v any) error {
	return setNetworks(p, v, &p.cfg.TrustedNetworks)
}

func setProxyProtocolFrom(p *parser, v any) error {
	return setNetworks(p, v, &p.cfg.ProxyProtocolFrom)
}

// setNetworks sets a list of networks (CIDR, or a bare address for one
// host).
func setNetworks(p *parser, v any, field *[]netip.Prefix) error {
	nets := []netip.Prefix{}
	ok, err := stringList(p, v, func(_ int, s string) error {
		n, err := ParsePrefix(s)
		if err != nil {
			return err
		}
		nets = append(nets, n)
		return nil
	})
	if err != nil || !ok {
		return err
	}
	*field = nets
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// unknownKeyMsg explains an unknown key, suggesting the known key it most
// likely means: the same name in another section, or the sendmail option
// name (confMAX_DAEMON_CHILDREN, confTO_COMMAND) translated.
func unknownKeyMsg(section, k string) string {
	norm := strings.ToLower(strings.ReplaceAll(k, "-", "_"))
	norm = strings.TrimPrefix(norm, "conf")
	norm = strings.TrimPrefix(norm, "_")
	candidates := []string{norm}
	if t, ok := strings.CutPrefix(norm, "to_"); ok {
		candidates = append(candidates, t)
	}
	where := func(sec, key string) string {
		if sec == "" {
			return key + " (at the top level, before any [table])"
		}
		if sec == section {
			return key
		}
		return "[" + sec + "] " + key
	}
	for _, cand := range candidates {
		for _, sec := range Sections {
			if lookupKey(sec, cand) != nil && !(section == sec && cand == k) {
				return "unknown key; did you mean " + where(sec, cand) + "?"
			}
		}
	}
	if section == "" && isSection(norm) {
		return "unknown table; did you mean [" + norm + "]?"
	}
	return "unknown key"
}

package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// mxguard writes its log with log/slog: key=value pairs (logfmt), a value
// in Go's double-quoted form whenever it holds a space, '=', '"' or
// anything unprintable; or, with a JSON handler, one JSON object a line.
// The client's address is the value of the ip key, which the server fills
// from the connection; client text (addresses, commands) goes into other
// values, quoted as needed, so a real parse of the line, one value a token,
// never mistakes it for a field.

const sourceMxguard = "ip= field of an mxguard log line"

// field is one key=value pair of a logfmt line.
type field struct{ key, value string }

// parseMxguard reads a line mxguard wrote, after whatever prefix syslog or
// journald put before it.
func parseMxguard(s string) (Target, error) {
	if i := strings.IndexAny(s, `{="`); i >= 0 && s[i] == '{' {
		return parseJSONLine(s[i:])
	}
	eq := strings.IndexByte(s, '=')
	if eq < 0 {
		return Target{}, errNotALogLine
	}
	start := strings.LastIndexByte(s[:eq], ' ') + 1
	if strings.ContainsRune(s[:start], '"') {
		return Target{}, errNotALogLine
	}
	// slog writes time, level and msg first (the first two can be left
	// out by a handler option, msg never): a line that starts otherwise is
	// not mxguard's, and its key=value text may be anyone's.
	switch key := s[start:eq]; key {
	case "time", "level", "msg":
	default:
		return Target{}, fmt.Errorf("log line refused: not an mxguard or sendmail log line (its first field is %s=, "+
			"mxguard's lines start with time=)", clip(key))
	}
	fields, err := splitLogfmt(s[start:])
	if err != nil {
		return Target{}, fmt.Errorf("log line refused: not an mxguard log line: %v", err)
	}
	var ips, reasons []string
	hasMsg := false
	for _, f := range fields {
		switch f.key {
		case "ip":
			ips = append(ips, f.value)
		case "reason":
			reasons = append(reasons, f.value)
		case "msg":
			hasMsg = true
		}
	}
	if !hasMsg {
		return Target{}, errors.New("log line refused: not an mxguard log line (no msg= field)")
	}
	return mxguardTarget(ips, reasons, "ip=")
}

// mxguardTarget checks that a line had exactly one ip field holding an
// address, and describes it.
func mxguardTarget(ips, reasons []string, name string) (Target, error) {
	switch len(ips) {
	case 0:
		return Target{}, fmt.Errorf("log line refused: it has no %s field, so it names no client "+
			"(mxguard writes the client's address only there)", name)
	case 1:
	default:
		quoted := make([]string, len(ips))
		for i, ip := range ips {
			quoted[i] = clip(ip)
		}
		return Target{}, fmt.Errorf("log line refused: it has %d %s fields (%s): ambiguous, "+
			"mxguard writes one; was the line edited or joined with another?", len(ips), name, strings.Join(quoted, ", "))
	}
	a, err := netip.ParseAddr(ips[0])
	if err != nil {
		return Target{}, fmt.Errorf("log line refused: its %s field %s is not an IP address", name, clip(ips[0]))
	}
	a = a.Unmap().WithZone("")
	t := Target{Prefix: netip.PrefixFrom(a, a.BitLen()), Source: sourceMxguard, Reason: "no reason= field"}
	if name != "ip=" {
		t.Source = `"ip" field of an mxguard JSON log line`
		t.Reason = `no "reason" field`
	}
	if len(reasons) > 0 {
		t.Reason = "reason=" + strings.Join(reasons, ",")
	}
	return t, nil
}

// splitLogfmt splits a logfmt record strictly, as slog's TextHandler
// writes it: key=value pairs separated by spaces, each key and value
// either bare (no space, '=' or '"') or a Go double-quoted string.
func splitLogfmt(s string) ([]field, error) {
	var out []field
	for pos := 0; pos < len(s); {
		key, n, err := logfmtToken(s[pos:], true)
		if err != nil {
			return nil, fmt.Errorf("at byte %d: %v", pos, err)
		}
		pos += n
		if pos >= len(s) || s[pos] != '=' {
			return nil, fmt.Errorf("at byte %d: %s is not followed by '='", pos, clip(key))
		}
		pos++
		value, n, err := logfmtToken(s[pos:], false)
		if err != nil {
			return nil, fmt.Errorf("at byte %d, the value of %s: %v", pos, clip(key), err)
		}
		pos += n
		out = append(out, field{key, value})
		if pos < len(s) && s[pos] != ' ' {
			return nil, fmt.Errorf("at byte %d: the value of %s is followed by %q, not a space", pos, clip(key), s[pos])
		}
		for pos < len(s) && s[pos] == ' ' {
			pos++
		}
	}
	return out, nil
}

// logfmtToken reads one key (up to '=') or value (up to a space) and
// returns it unquoted with the number of bytes it took.
func logfmtToken(s string, isKey bool) (string, int, error) {
	if strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", 0, errors.New("a quoted string that does not end")
		}
		v, err := strconv.Unquote(q)
		if err != nil {
			return "", 0, err
		}
		return v, len(q), nil
	}
	end := strings.IndexByte(s, ' ')
	if isKey {
		end = strings.IndexAny(s, " =")
	}
	if end < 0 {
		end = len(s)
	}
	tok := s[:end]
	switch {
	case tok == "" && isKey:
		return "", 0, errors.New("an empty key")
	case tok == "":
		return "", 0, errors.New("an empty value (slog writes \"\")")
	case strings.ContainsAny(tok, `"=`):
		// slog quotes any value holding these; bare, they mean the line
		// is not slog's.
		return "", 0, fmt.Errorf("%s holds '\"' or '=' without quotes", clip(tok))
	}
	return tok, end, nil
}

// parseJSONLine reads one line of slog's JSONHandler: a JSON object whose
// top-level "ip" holds the client's address.
func parseJSONLine(s string) (Target, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	bad := func(err error) (Target, error) {
		return Target{}, fmt.Errorf("log line refused: not an mxguard JSON log line: %v", err)
	}
	if tok, err := dec.Token(); err != nil {
		return bad(err)
	} else if tok != json.Delim('{') {
		return bad(errors.New("not a JSON object"))
	}
	var ips, reasons []string
	hasMsg := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad(err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return bad(err)
		}
		switch key {
		case "ip", "reason":
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return bad(fmt.Errorf("%q is not a string", key))
			}
			if key == "ip" {
				ips = append(ips, v)
			} else {
				reasons = append(reasons, v)
			}
		case "msg":
			hasMsg = true
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return bad(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad(errors.New("more text after the JSON object"))
	}
	if !hasMsg {
		return bad(errors.New(`no "msg" field`))
	}
	return mxguardTarget(ips, reasons, `"ip"`)
}

var errNotALogLine = errors.New("log line refused: not an mxguard or sendmail log line " +
	"(mxguard's are key=value pairs starting with time=, or JSON objects; sendmail's carry a sendmail[pid]: or sm-mta[pid]: tag)")

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

// Field is one key and value of a line mxguard wrote: a logfmt pair, or a
// top-level member of a JSON line.
type Field struct {
	Key   string
	Value string // unquoted; a JSON value that is no string as it is written
	str   bool   // JSON: the value was a string
}

// MxguardFields reads a line mxguard wrote, as text (logfmt) or JSON, after
// whatever prefix syslog or journald put before it, and returns its
// fields in order. A quoted value is one field whatever it holds, so text
// a client sent never passes for a field of the server's (see ParseTarget).
// A line in neither form, or without a msg field, is an error.
func MxguardFields(s string) ([]Field, error) {
	fields, _, err := mxguardFields(s)
	return fields, err
}

// mxguardFields is MxguardFields, and whether the line was JSON.
func mxguardFields(s string) ([]Field, bool, error) {
	if i := strings.IndexAny(s, `{="`); i >= 0 && s[i] == '{' {
		fields, err := jsonFields(s[i:])
		if err != nil {
			return nil, true, fmt.Errorf("log line refused: not an mxguard JSON log line: %v", err)
		}
		if !hasKey(fields, "msg") {
			return nil, true, errors.New(`log line refused: not an mxguard JSON log line: no "msg" field`)
		}
		return fields, true, nil
	}
	eq := strings.IndexByte(s, '=')
	if eq < 0 {
		return nil, false, errNotALogLine
	}
	start := strings.LastIndexByte(s[:eq], ' ') + 1
	if strings.ContainsRune(s[:start], '"') {
		return nil, false, errNotALogLine
	}
	// slog writes time, level and msg first (the first two can be left
	// out by a handler option, msg never): a line that starts otherwise is
	// not mxguard's, and its key=value text may be anyone's.
	switch key := s[start:eq]; key {
	case "time", "level", "msg":
	default:
		return nil, false, fmt.Errorf("log line refused: not an mxguard or sendmail log line (its first field is %s=, "+
			"mxguard's lines start with time=)", clip(key))
	}
	fields, err := splitLogfmt(s[start:])
	if err != nil {
		return nil, false, fmt.Errorf("log line refused: not an mxguard log line: %v", err)
	}
	if !hasKey(fields, "msg") {
		return nil, false, errors.New("log line refused: not an mxguard log line (no msg= field)")
	}
	return fields, false, nil
}

func hasKey(fields []Field, key string) bool {
	for _, f := range fields {
		if f.Key == key {
			return true
		}
	}
	return false
}

// parseMxguard reads a line mxguard wrote, after whatever prefix syslog or
// journald put before it.
func parseMxguard(s string) (Target, error) {
	fields, isJSON, err := mxguardFields(s)
	if err != nil {
		return Target{}, err
	}
	var ips, reasons []string
	for _, f := range fields {
		switch f.Key {
		case "ip", "reason":
			if isJSON && !f.str {
				return Target{}, fmt.Errorf("log line refused: not an mxguard JSON log line: %q is not a string", f.Key)
			}
			if f.Key == "ip" {
				ips = append(ips, f.Value)
			} else {
				reasons = append(reasons, f.Value)
			}
		}
	}
	name := "ip="
	if isJSON {
		name = `"ip"`
	}
	return mxguardTarget(ips, reasons, name)
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
func splitLogfmt(s string) ([]Field, error) {
	var out []Field
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
		out = append(out, Field{Key: key, Value: value})
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

// jsonFields reads one line of slog's JSONHandler: a JSON object, whose
// top-level members it returns in order (nested ones are part of their
// member's value).
func jsonFields(s string) ([]Field, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	if tok, err := dec.Token(); err != nil {
		return nil, err
	} else if tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var out []Field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		f := Field{Key: key, Value: string(raw)}
		var v string
		if json.Unmarshal(raw, &v) == nil {
			f.Value, f.str = v, true
		}
		out = append(out, f)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more text after the JSON object")
	}
	return out, nil
}

var errNotALogLine = errors.New("log line refused: not an mxguard or sendmail log line " +
	"(mxguard's are key=value pairs starting with time=, or JSON objects; sendmail's carry a sendmail[pid]: or sm-mta[pid]: tag)")

package deliver

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits on what a downstream server may send in one reply. RFC 5321 caps a
// reply line at 512 octets; real servers exceed that a little, a hostile or
// broken one by any amount, so the limits are generous but finite.
const (
	maxReplyLine  = 2048
	maxReplyLines = 128
	maxReplyText  = 900 // of the one-line form kept in the spool and DSNs
)

var errReplyTooLong = errors.New("reply too long")

// reply is one SMTP or LMTP reply, possibly spanning several lines.
type reply struct {
	code  int
	lines []string // the text after "ddd " or "ddd-" on each line
}

// readReply reads one complete reply. It accepts a bare LF as the line end
// (some servers send it) but insists on the same code on every line, as a
// mismatch means the two sides no longer agree on where replies begin.
func readReply(r *bufio.Reader) (reply, error) {
	var rep reply
	for {
		line, err := readLine(r)
		if err != nil {
			return reply{}, err
		}
		if len(line) < 3 {
			return reply{}, fmt.Errorf("malformed reply %q", line)
		}
		code, ok := parseCode(line[:3])
		if !ok {
			return reply{}, fmt.Errorf("malformed reply code in %q", line)
		}
		if rep.lines != nil && code != rep.code {
			return reply{}, fmt.Errorf("reply code changed from %d to %d within one reply", rep.code, code)
		}
		rep.code = code
		more := false
		text := ""
		if len(line) > 3 {
			switch line[3] {
			case '-':
				more = true
			case ' ':
			default:
				return reply{}, fmt.Errorf("malformed reply %q", line)
			}
			text = line[4:]
		}
		if len(rep.lines) == maxReplyLines {
			return reply{}, errReplyTooLong
		}
		rep.lines = append(rep.lines, text)
		if !more {
			return rep, nil
		}
	}
}

// readLine returns one line without its line ending, refusing lines longer
// than maxReplyLine.
func readLine(r *bufio.Reader) (string, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > maxReplyLine+2 {
			return "", errReplyTooLong
		}
		buf = append(buf, chunk...)
		switch err {
		case nil:
			buf = buf[:len(buf)-1]
			if n := len(buf); n > 0 && buf[n-1] == '\r' {
				buf = buf[:n-1]
			}
			return string(buf), nil
		case bufio.ErrBufferFull:
			continue
		default:
			return "", err
		}
	}
}

func parseCode(s string) (int, bool) {
	if len(s) != 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9' {
		return 0, false
	}
	n, _ := strconv.Atoi(s)
	return n, true
}

// class is the first digit of the code: 2 success, 3 intermediate, 4
// temporary failure, 5 permanent failure.
func (r reply) class() int { return r.code / 100 }

// enhanced returns the RFC 3463 status code at the start of the reply text,
// or "" when there is none (or its class disagrees with the reply code).
func (r reply) enhanced() string {
	if len(r.lines) == 0 {
		return ""
	}
	return enhancedCode(r.lines[0], r.class())
}

// enhancedCode returns the "c.sss.ddd" prefix of text if there is one whose
// class is class.
func enhancedCode(text string, class int) string {
	code, _, _ := strings.Cut(text, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || int(parts[0][0]-'0') != class {
		return ""
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return ""
		}
		for _, c := range []byte(p) {
			if c < '0' || c > '9' {
				return ""
			}
		}
	}
	return code
}

// String renders the reply on one line, lines joined by spaces, with control
// characters and non-ASCII bytes replaced, so that it is safe in a log, a spool file and a DSN
// header field.
func (r reply) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.code))
	for _, l := range r.lines {
		if l == "" {
			continue
		}
		b.WriteByte(' ')
		for _, c := range []byte(l) {
			if c < 0x20 || c >= 0x7f {
				c = '?'
			}
			b.WriteByte(c)
		}
		if b.Len() > maxReplyText {
			break
		}
	}
	s := b.String()
	if len(s) > maxReplyText {
		s = s[:maxReplyText]
	}
	return s
}

// extensions returns the keywords of an EHLO or LHLO reply, upper-cased,
// mapped to their parameters.
func (r reply) extensions() map[string]string {
	ext := make(map[string]string)
	for _, l := range r.lines[1:] {
		kw, params, _ := strings.Cut(l, " ")
		if kw == "" {
			continue
		}
		ext[strings.ToUpper(kw)] = params
	}
	return ext
}

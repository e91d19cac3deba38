package loadgen

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// envelope is one message as it goes on the wire, built once and shared by
// every session, so that sending costs no allocation per message.
type envelope struct {
	mail  []byte   // MAIL FROM:<...>\r\n
	rcpts [][]byte // RCPT TO:<...>\r\n, one per recipient
	data  []byte   // header and body, dot-terminated
}

// bodyLine fills message bodies: printable, 78 octets and CRLF, no dot at
// the start, so nothing needs dot-stuffing.
const bodyLine = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=+abcdefghijklm\r\n"

// recipients returns the n envelope recipients for to, named the way
// Postfix's smtp-source names them (to, 2to, 3to ... Nto), so that one set
// of local users serves both tools.
func recipients(to string, n int) []string {
	rs := make([]string, n)
	rs[0] = to
	for i := 2; i <= n; i++ {
		rs[i-1] = strconv.Itoa(i) + to
	}
	return rs
}

// checkPath rejects an address that would break the command it goes into.
func checkPath(what, addr string) error {
	if i := strings.IndexAny(addr, "<> \t\r\n"); i >= 0 {
		return fmt.Errorf("%s address %q: %q not allowed", what, addr, addr[i])
	}
	return nil
}

// newEnvelope builds the wire form of a message with a body of exactly
// size octets (0, or at least 2 so that it can end in CRLF) after a
// small header.
func newEnvelope(from, to string, rcpts, size int, now time.Time) (*envelope, error) {
	if err := checkPath("sender", from); err != nil {
		return nil, err
	}
	if to == "" {
		return nil, errors.New("no recipient address")
	}
	if err := checkPath("recipient", to); err != nil {
		return nil, err
	}
	if rcpts < 1 {
		return nil, fmt.Errorf("recipients per message: %d, want at least 1", rcpts)
	}
	if size < 0 || size == 1 {
		return nil, fmt.Errorf("body size %d: want 0 or at least 2 octets", size)
	}
	env := &envelope{mail: []byte("MAIL FROM:<" + from + ">\r\n")}
	for _, r := range recipients(to, rcpts) {
		env.rcpts = append(env.rcpts, []byte("RCPT TO:<"+r+">\r\n"))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: mxload test message\r\nDate: %s\r\n\r\n",
		from, to, now.Format(time.RFC1123Z))
	for left := size; left > 0; {
		n := min(len(bodyLine), left)
		if left-n == 1 {
			n-- // a 1-octet last line cannot end in CRLF
		}
		b.WriteString(bodyLine[:n-2])
		b.WriteString("\r\n")
		left -= n
	}
	data := []byte(b.String())
	env.data = append(data, ".\r\n"...)
	return env, nil
}

// octets returns the DATA payload size: what the server stores, without
// the terminating dot.
func (e *envelope) octets() int { return len(e.data) - len(".\r\n") }

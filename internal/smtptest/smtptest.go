// Package smtptest plays SMTP conversations written as data, one step a
// line, against a server: the protocol core's transcripts
// (internal/smtpd/testdata/transcripts) and the fully configured server's
// (internal/server/testdata/transcripts) are read by the same player, so
// that a new case is a new file, not new code.
//
// Steps:
//
//	C: text      the client sends text and CRLF
//	EHLO name    the client sends EHLO and reads the whole 250 reply
//	R: "quoted"  the client sends these exact bytes (Go string syntax)
//	FLOOD n "quoted"  the client sends these bytes n times over, and stops
//	             early without complaint if the server closes the connection
//	SLEEP d      the client waits d
//	S: prefix    the server's next reply line starts with prefix
//	CLOSED       the server has closed the connection
//	TLS          the client starts TLS (after S: 220 2.0.0)
//	TLS FAILS    the client tries to start TLS, and the handshake fails
//	MESSAGES n   the server has stored n messages so far
//	MESSAGE i "quoted"  message i (from 1) is exactly this
//	ELAPSED >d   at least d has passed since start
package smtptest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Load reads a transcript file: its settings ("@key value" lines, for the
// caller to apply) and its steps. Blank lines and '#' comments are skipped.
func Load(t testing.TB, file string) (settings [][2]string, steps []string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, " "); ok && strings.HasPrefix(k, "@") {
			settings = append(settings, [2]string{k[1:], v})
			continue
		}
		steps = append(steps, line)
	}
	return settings, steps
}

// Play runs steps on nc, a connection to the server opened at start (taken
// before dialling: the server's clocks start at its accept). messages, for
// MESSAGES and MESSAGE, returns what the server stored so far.
func Play(t testing.TB, name string, start time.Time, nc net.Conn, steps []string, messages func() []string) {
	t.Helper()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(nc)
	for i, step := range steps {
		verb, arg, _ := strings.Cut(step, " ")
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s step %d (%q): %s", name, i+1, step, fmt.Sprintf(format, args...))
		}
		switch verb {
		case "C:":
			if _, err := io.WriteString(nc, arg+"\r\n"); err != nil {
				fail("write: %v", err)
			}
		case "R:":
			raw, err := strconv.Unquote(arg)
			if err != nil {
				fail("bad quoted string: %v", err)
			}
			if _, err := io.WriteString(nc, raw); err != nil {
				fail("write: %v", err)
			}
		case "S:":
			got, err := br.ReadString('\n')
			if err != nil {
				fail("read: %v (got %q)", err, got)
			}
			if !strings.HasSuffix(got, "\r\n") {
				fail("reply %q does not end in CRLF", got)
			}
			if !strings.HasPrefix(got, arg) {
				fail("got %q, want prefix %q", strings.TrimSpace(got), arg)
			}
		case "CLOSED":
			got, err := br.ReadString('\n')
			if err != io.EOF && !isReset(err) {
				fail("want closed connection, got %q, %v", got, err)
			}
		case "EHLO":
			// Shorthand: send EHLO and take the whole 250 reply.
			if _, err := io.WriteString(nc, "EHLO "+arg+"\r\n"); err != nil {
				fail("write: %v", err)
			}
			for {
				got, err := br.ReadString('\n')
				if err != nil || !strings.HasPrefix(got, "250") {
					fail("EHLO reply %q, %v", got, err)
				}
				if got[3] == ' ' {
					break
				}
			}
		case "FLOOD":
			ns, q, _ := strings.Cut(arg, " ")
			n, err := strconv.Atoi(ns)
			if err != nil {
				fail("bad count: %v", err)
			}
			raw, err := strconv.Unquote(q)
			if err != nil || raw == "" {
				fail("bad quoted string: %v", err)
			}
			// Batched, so that a flood of short strings is not a
			// system call each.
			batch := []byte(strings.Repeat(raw, max(1, min(n, 64<<10/max(len(raw), 1)))))
			for sent := 0; sent < n; sent += len(batch) / len(raw) {
				if _, err := nc.Write(batch[:min(len(batch), (n-sent)*len(raw))]); err != nil {
					if !isReset(err) && !errors.Is(err, syscall.EPIPE) {
						fail("write: %v", err)
					}
					break
				}
			}
		case "SLEEP":
			d, err := time.ParseDuration(arg)
			if err != nil {
				fail("bad duration")
			}
			time.Sleep(d)
		case "TLS":
			tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
			err := tc.Handshake()
			if arg == "FAILS" {
				if err == nil {
					fail("TLS handshake succeeded")
				}
				break
			}
			if err != nil {
				fail("TLS handshake: %v", err)
			}
			nc, br = tc, bufio.NewReader(tc)
		case "MESSAGES":
			want, _ := strconv.Atoi(arg)
			if got := len(messages()); got != want {
				fail("handler stored %d messages, want %d", got, want)
			}
		case "MESSAGE":
			is, q, _ := strings.Cut(arg, " ")
			i, _ := strconv.Atoi(is)
			want, err := strconv.Unquote(q)
			if err != nil {
				fail("bad quoted string: %v", err)
			}
			msgs := messages()
			if i < 1 || i > len(msgs) {
				fail("no message %d (have %d)", i, len(msgs))
			}
			if msgs[i-1] != want {
				fail("message %d is %q, want %q", i, msgs[i-1], want)
			}
		case "ELAPSED":
			d, err := time.ParseDuration(strings.TrimPrefix(arg, ">"))
			if err != nil {
				fail("bad duration")
			}
			if e := time.Since(start); e < d {
				fail("only %v elapsed", e)
			}
		default:
			fail("unknown step")
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

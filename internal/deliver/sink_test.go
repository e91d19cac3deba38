package deliver

import (
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/smtpsink"
)

// startSink starts smtp-sink with flags on a free loopback port, or on a
// unix socket when unixSocket is true, and stops it when the test ends.
// Every transaction is dumped to a file that sinkDumps reads.
func startSink(t testing.TB, unixSocket bool, flags ...string) *smtpsink.Sink {
	t.Helper()
	return startSinkAt(t, "", unixSocket, flags...)
}

// startSinkAt is startSink on a given TCP address ("" for a free one).
func startSinkAt(t testing.TB, addr string, unixSocket bool, flags ...string) *smtpsink.Sink {
	t.Helper()
	return smtpsink.Start(t, smtpsink.Options{Flags: flags, Addr: addr, Unix: unixSocket})
}

// sinkDump is one transaction as smtp-sink recorded it.
type sinkDump struct {
	mailArgs string
	rcpts    []string
	body     string // what followed smtp-sink's own headers, LF line endings
}

// sinkDumps returns the transactions s recorded so far.
func sinkDumps(t *testing.T, s *smtpsink.Sink) []sinkDump {
	t.Helper()
	var out []sinkDump
	for _, b := range s.Dumps(t) {
		var d sinkDump
		lines := strings.SplitAfter(b, "\n")
		i := 0
		for ; i < len(lines); i++ {
			l := strings.TrimSuffix(lines[i], "\n")
			switch {
			case strings.HasPrefix(l, "X-Mail-Args: "):
				d.mailArgs = strings.TrimPrefix(l, "X-Mail-Args: ")
			case strings.HasPrefix(l, "X-Rcpt-Args: "):
				d.rcpts = append(d.rcpts, strings.TrimPrefix(l, "X-Rcpt-Args: "))
			case strings.HasPrefix(l, "X-"):
			case strings.HasPrefix(l, "Received: "):
				// smtp-sink's Received header: skip its continuation lines.
				for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
					i++
				}
				d.body = strings.Join(lines[i+1:], "")
				i = len(lines)
			}
		}
		out = append(out, d)
	}
	return out
}

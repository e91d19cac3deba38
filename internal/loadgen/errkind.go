package loadgen

import (
	"errors"
	"io"
	"maps"
	"net"
	"net/textproto"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// errKind names the cause of a network error for counting: the errno's
// symbolic name (EADDRNOTAVAIL, ECONNRESET, ECONNREFUSED, EMFILE ...) when
// there is one, because that is what tells an operator which limit was hit.
func errKind(err error) string {
	var errno syscall.Errno
	var perr textproto.ProtocolError
	switch {
	case errors.As(err, &errno):
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return errno.Error()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.As(err, &perr), errors.Is(err, errProtocol):
		return "protocol"
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return "timeout"
	}
	return "other"
}

// errProtocol marks a reply that makes no sense at its place in the
// dialogue, such as 250 to DATA.
var errProtocol = errors.New("unexpected reply")

// counts is a tally by name. Each worker keeps its own and the results are
// merged at the end, so counting takes no lock.
type counts map[string]int

func (c counts) merge(o counts) {
	for k, v := range o {
		c[k] += v
	}
}

// keys returns the names in sorted order, for stable output.
func (c counts) keys() []string { return slices.Sorted(maps.Keys(c)) }

//go:build !linux

package stress

import (
	"errors"
	"net"
)

// AcceptQueue is not known on this system: only Linux reports a
// listener's queue.
func AcceptQueue(ln net.Listener) (int, error) { return 0, errors.ErrUnsupported }

package loadgen

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound to
// a source address. Without it bind() must pick the port on its own,
// before it knows the destination, and so cannot share a port between
// connections to different servers; with it connect() picks the port for
// the whole 4-tuple (Linux 4.2 and later). Failure is not fatal: the
// kernel then simply picks ports the old way.
func bindNoPort(network, address string, c syscall.RawConn) error {
	c.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	return nil
}

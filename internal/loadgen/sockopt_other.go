//go:build !linux

package loadgen

import "syscall"

// bindNoPort does nothing outside Linux, which alone has
// IP_BIND_ADDRESS_NO_PORT.
func bindNoPort(network, address string, c syscall.RawConn) error { return nil }

package doctor

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Listen binds each address as `mxguard serve` will, and releases it at
// once. An address in use, one that needs a privilege this process lacks,
// or one no interface of this host has, is a Fail that says which.
func Listen(addrs []string) []Finding {
	if len(addrs) == 0 {
		return []Finding{finding(Fail, CheckListen, "no listen addresses: mxguard would take no mail")}
	}
	var out []Finding
	for _, addr := range addrs {
		out = append(out, bind(addr))
	}
	return out
}

func bind(addr string) Finding {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		text := addr + " can be bound"
		if privileged(addr) {
			// Bound here, perhaps as root: the service's own user is
			// another matter.
			text += " (by uid " + strconv.Itoa(os.Geteuid()) + "; a port below 1024 needs root or CAP_NET_BIND_SERVICE for the user mxguard runs as)"
		}
		return finding(OK, CheckListen, "%s", text)
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return finding(Fail, CheckListen, "%s is in use: another program listens there (ss -ltnp shows which; a running mxguard counts)", addr)
	case errors.Is(err, syscall.EACCES):
		return finding(Fail, CheckListen, "%s: permission denied: a port below 1024 needs root or CAP_NET_BIND_SERVICE "+
			"(systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; or setcap cap_net_bind_service=+ep on the mxguard binary)", addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return finding(Fail, CheckListen, "%s: no interface of this host has that address", addr)
	}
	return finding(Fail, CheckListen, "%s cannot be bound: %v", addr, err)
}

// privileged reports whether addr's port is one only a privileged process
// may bind (by default; net.ipv4.ip_unprivileged_port_start can move it).
func privileged(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n < 1024
}

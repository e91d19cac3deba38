// Package control is mxguard's local control channel: a Unix socket on
// which the running server takes operator commands (`mxguard trust`,
// `mxguard deny`, `mxguard reload`) without a restart, and the helpers to
// pick an address out of whatever the operator pastes, a bare IP, a CIDR
// or a whole log line, so that a host is trusted "directly from the log
// entry".
//
// The protocol is one line each way: "TRUST 192.0.2.0/24\n" answered by
// "OK ...\n" or "ERR ...\n". It is a Unix socket, not TCP, so that file
// permissions decide who may steer the server.
package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"time"
)

// Handler carries out commands. Each returns a short text for the operator.
type Handler interface {
	Trust(p netip.Prefix) (string, error)
	Deny(p netip.Prefix) (string, error)
	Reload() (string, error)
	Status() (string, error)
}

// Listen opens the control socket at path, readable and writable by its
// owner only.
func Listen(path string) (net.Listener, error) {
	os.Remove(path) // a stale socket left by a crash
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve takes control connections on ln until ctx is done, then closes ln.
// timeout bounds each exchange.
func Serve(ctx context.Context, ln net.Listener, timeout time.Duration, h Handler, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go serveConn(c, timeout, h, log)
	}
}

func serveConn(c net.Conn, timeout time.Duration, h Handler, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReaderSize(c, 1024).ReadString('\n')
	if err != nil {
		return
	}
	verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	var msg string
	switch strings.ToUpper(verb) {
	case "TRUST", "DENY":
		var p netip.Prefix
		p, err = ParseTarget(arg)
		if err == nil {
			if strings.EqualFold(verb, "TRUST") {
				msg, err = h.Trust(p)
			} else {
				msg, err = h.Deny(p)
			}
		}
	case "RELOAD":
		msg, err = h.Reload()
	case "STATUS":
		msg, err = h.Status()
	default:
		err = fmt.Errorf("unknown command %q", verb)
	}
	if err != nil {
		log.Info("control command failed", "command", verb, "arg", arg, "err", err.Error())
		fmt.Fprintf(c, "ERR %s\n", oneLine(err.Error()))
		return
	}
	log.Info("control command", "command", verb, "arg", arg, "result", msg)
	fmt.Fprintf(c, "OK %s\n", oneLine(msg))
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// ErrNotRunning means no server answers on the control socket.
var ErrNotRunning = errors.New("no mxguard server is listening on the control socket")

// Send sends one command and returns the server's answer.
func Send(path, command string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return "", fmt.Errorf("%w (%s): %v", ErrNotRunning, path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("control socket: %v", err)
	}
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "OK"); ok {
		return strings.TrimSpace(rest), nil
	}
	return "", errors.New(strings.TrimSpace(strings.TrimPrefix(line, "ERR")))
}

// Patterns for an address inside a log line, most specific first: our own
// slog attribute, sendmail's and our "[1.2.3.4]" / "[IPv6:...]", a
// hosts_access "(host, ip)" pair, then any bare address.
var (
	reAttr    = regexp.MustCompile(`\bip=([0-9A-Fa-f:.]+)`)
	reBracket = regexp.MustCompile(`\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]`)
	rePair    = regexp.MustCompile(`\([^,()]*, ([0-9A-Fa-f:.]+)\)`)
	reBare    = regexp.MustCompile(`[0-9A-Fa-f:.]*[0-9A-Fa-f][0-9A-Fa-f:.]*`)
)

// ParseTarget reads what an operator gives `mxguard trust` or `deny`: an
// IP address (a /32 or /128), a CIDR prefix, or a whole log line, from
// which the client's address is picked.
func ParseTarget(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	for _, re := range []*regexp.Regexp{reAttr, reBracket, rePair} {
		for _, m := range re.FindAllStringSubmatch(s, -1) {
			if a, err := netip.ParseAddr(m[1]); err == nil {
				a = a.Unmap()
				return netip.PrefixFrom(a, a.BitLen()), nil
			}
		}
	}
	for _, m := range reBare.FindAllString(s, -1) {
		m = strings.Trim(m, ".:")
		if a, err := netip.ParseAddr(m); err == nil && (a.Is4() || strings.Count(m, ":") >= 2) {
			a = a.Unmap()
			return netip.PrefixFrom(a, a.BitLen()), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no IP address or CIDR prefix in %q", s)
}

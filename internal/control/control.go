// Package control is mxguard's local control channel: a Unix socket on
// which the running server takes operator commands (`mxguard trust`,
// `mxguard deny`, `mxguard reload`, `mxguard status`) without a restart,
// and ParseTarget, which reads what the operator gives trust and deny: a
// bare IP, a CIDR prefix, or a whole log line (mxguard's, in logfmt or
// JSON, or sendmail's), so that a host is trusted "directly from the log
// entry". From a line it takes the client's address only from the field
// the server wrote for the client (mxguard's ip=, sendmail's relay= or its
// leading [addr]), never from text the client sent, and refuses a line
// where that field is missing or appears twice.
//
// The protocol is one line each way: "TRUST 192.0.2.0/24\n" (an address or
// a prefix, nothing else; the command line parses log lines before it
// sends), or "BAN 3600s 192.0.2.0/24\n" (a Go duration, then the same),
// answered by "OK ...\n" or "ERR ...\n". It is a Unix socket, not
// TCP, so that file permissions decide who may steer the server: Send
// tells "permission denied" apart from "no server listening", and Listen
// replaces nothing at its path but a stale socket of its own kind.
package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// Handler carries out commands. Each returns a short text for the operator.
type Handler interface {
	Trust(p netip.Prefix) (string, error)
	Deny(p netip.Prefix) (string, error)
	Unban(p netip.Prefix) (string, error)
	Ban(p netip.Prefix, d time.Duration) (string, error)
	Reload() (string, error)
	Status() (string, error)
	Bans() (string, error)
}

// Listen opens the control socket at path, readable and writable by its
// owner only. A socket already at path that refuses connections is the
// stale one of a server that died, and is replaced; a socket that answers
// belongs to a running server, and anything else there (a file, a
// directory, a link) is not ours to delete: both are errors naming path.
func Listen(path string) (net.Listener, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("control socket %s: %v", path, bare(err))
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("control socket %s: there is %s at that path, not a socket; mxguard removes only "+
			"its own stale socket: move it away or set the \"control\" key to another path", path, describe(fi.Mode()))
	default:
		c, err := net.DialTimeout("unix", path, 2*time.Second)
		switch {
		case err == nil, errors.Is(err, syscall.EAGAIN): // EAGAIN: it answers, but its backlog is full
			if c != nil {
				c.Close()
			}
			return nil, fmt.Errorf("control socket %s is in use by a running server "+
				"(another mxguard? stop it, or set the \"control\" key to another path)", path)
		case errors.Is(err, syscall.ECONNREFUSED):
			// Nobody listens: left behind by a server that died.
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("control socket %s: removing the stale socket: %v", path, bare(err))
			}
		default:
			return nil, fmt.Errorf("control socket %s exists and cannot be checked for a running server: %v", path, bare(err))
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %v", path, bare(err))
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %v", path, bare(err))
	}
	return ln, nil
}

// describe names a kind of file for an error message.
func describe(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "a device"
	}
	return "something (" + m.Type().String() + ")"
}

// bare drops the "lstat PATH:" or "dial unix PATH:" wrapping of an error
// whose message names the path already.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// Serve takes control connections on ln until ctx is done, then closes ln.
// timeout (the config's timeouts.control) bounds each exchange.
func Serve(ctx context.Context, ln net.Listener, timeout time.Duration, h Handler, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
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
	case "TRUST", "DENY", "UNBAN":
		var p netip.Prefix
		p, err = ParsePrefix(strings.TrimSpace(arg))
		if err == nil {
			switch strings.ToUpper(verb) {
			case "TRUST":
				msg, err = h.Trust(p)
			case "DENY":
				msg, err = h.Deny(p)
			default:
				msg, err = h.Unban(p)
			}
		}
	case "BAN":
		msg, err = ban(h, arg)
	case "BANS":
		msg, err = h.Bans()
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

// ban carries out "BAN <duration> <prefix>".
func ban(h Handler, arg string) (string, error) {
	f := strings.Fields(arg)
	if len(f) != 2 {
		return "", errors.New("BAN takes a duration and an address or prefix")
	}
	d, err := time.ParseDuration(f[0])
	if err != nil || d <= 0 {
		return "", fmt.Errorf("ban: %q is not a positive duration", clip(f[0]))
	}
	p, err := ParsePrefix(f[1])
	if err != nil {
		return "", err
	}
	return h.Ban(p, d)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// Errors of Send when it cannot reach the server. Only ErrNotRunning means
// that no server runs on the socket; with ErrPermission one may well run,
// but this user may not talk to it.
var (
	ErrNotRunning = errors.New("no mxguard server is listening on the control socket")
	ErrPermission = errors.New("permission denied on the control socket")
)

// Send sends one command and returns the server's answer.
func Send(path, command string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return "", fmt.Errorf("%w %s (the socket or its directory): run this command as the user mxguard runs as, or as root", ErrPermission, path)
		case errors.Is(err, syscall.ENOENT):
			return "", fmt.Errorf("%w %s (there is no socket)", ErrNotRunning, path)
		case errors.Is(err, syscall.ECONNREFUSED):
			return "", fmt.Errorf("%w %s (connection refused: the socket is stale, or not a socket)", ErrNotRunning, path)
		}
		return "", fmt.Errorf("control socket %s: %v", path, bare(err))
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return "", fmt.Errorf("control socket %s: %v", path, bare(err))
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("control socket %s: no answer: %v", path, bare(err))
	}
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "OK"); ok {
		return strings.TrimSpace(rest), nil
	}
	return "", errors.New(strings.TrimSpace(strings.TrimPrefix(line, "ERR")))
}

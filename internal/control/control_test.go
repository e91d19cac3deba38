package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu      sync.Mutex
	trusted []netip.Prefix
	banned  []string
}

func (r *recorder) Ban(p netip.Prefix, d time.Duration) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.banned = append(r.banned, p.String()+" "+d.String())
	return "banned " + p.String(), nil
}

func (r *recorder) Trust(p netip.Prefix) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trusted = append(r.trusted, p)
	return "trusted " + p.String(), nil
}
func (r *recorder) Deny(p netip.Prefix) (string, error) { return "", io.ErrUnexpectedEOF }
func (r *recorder) Reload() (string, error)             { return "reloaded", nil }
func (r *recorder) Status() (string, error)             { return "up", nil }
func (r *recorder) Bans() (string, error)               { return "[]", nil }
func (r *recorder) Unban(p netip.Prefix) (string, error) {
	return "lifted 0 bans in " + p.String(), nil
}

// serve runs Serve on a fresh socket at path until the test ends.
func serve(t *testing.T, path string, h Handler) {
	t.Helper()
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Serve(ctx, ln, time.Second, h, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func TestServeAndSend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	rec := &recorder{}
	serve(t, path, rec)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	out, err := Send(path, "TRUST 127.0.0.9", time.Second)
	if err != nil || out != "trusted 127.0.0.9/32" {
		t.Fatalf("Send = %q, %v", out, err)
	}
	// The socket takes an address or a prefix; log lines are read by the
	// command line, which shows the operator what it found.
	if out, err := Send(path, "TRUST time=x level=INFO msg=x ip=127.0.0.10", time.Second); err == nil {
		t.Fatalf("a log line on the socket was taken: %q", out)
	}
	if _, err := Send(path, "DENY 1.2.3.4", time.Second); err == nil {
		t.Fatal("handler error not passed back")
	}
	if _, err := Send(path, "FROB", time.Second); err == nil {
		t.Fatal("unknown command accepted")
	}
	if out, err := Send(path, "BAN 3600s 192.0.2.7/24", time.Second); err != nil || out != "banned 192.0.2.0/24" {
		t.Fatalf("BAN = %q, %v", out, err)
	}
	for _, bad := range []string{"BAN 192.0.2.7", "BAN 1h", "BAN -1h 192.0.2.7", "BAN 0s 192.0.2.7", "BAN 1d 192.0.2.7", "BAN 1h 192.0.2.7 x", "BAN 1h host.example"} {
		if out, err := Send(path, bad, time.Second); err == nil {
			t.Errorf("%q was taken: %q", bad, out)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.trusted) != 1 {
		t.Fatalf("trusted %v, want only 127.0.0.9/32", rec.trusted)
	}
	if len(rec.banned) != 1 || rec.banned[0] != "192.0.2.0/24 1h0m0s" {
		t.Fatalf("banned %v, want only 192.0.2.0/24 for an hour", rec.banned)
	}
}

// staleSocket leaves a socket file at path that nobody listens on, as a
// server killed with SIGKILL does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

// TestSendErrors: only a missing or refusing socket means "not running",
// the one case in which `mxguard trust` may write the trust file itself.
func TestSendErrors(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	staleSocket(t, stale)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		notRunning bool
		says       string
	}{
		{"no socket", filepath.Join(dir, "none.sock"), true, "no socket"},
		{"stale socket", stale, true, "connection refused"},
		{"regular file", file, true, "connection refused"},
		{"path through a file", filepath.Join(file, "x.sock"), false, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Send(tt.path, "STATUS", time.Second)
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if errors.Is(err, ErrNotRunning) != tt.notRunning || errors.Is(err, ErrPermission) {
				t.Errorf("Send: %v; want ErrNotRunning %v, never ErrPermission", err, tt.notRunning)
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("Send: %v; want it to name %s and say %q", err, tt.path, tt.says)
			}
		})
	}
}

// TestSendPermission: a socket this user may not open is "permission
// denied", never "not running". Root passes file permissions, so there the
// e2e test TestControlPermission runs the command as nobody instead.
func TestSendPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, which file permissions do not stop; internal/e2e TestControlPermission covers this as nobody")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "control.sock")
	serve(t, path, &recorder{})
	for _, tt := range []struct {
		name  string
		chmod func() error
	}{
		{"socket", func() error { return os.Chmod(path, 0) }},
		{"directory", func() error { os.Chmod(path, 0o600); return os.Chmod(dir, 0o600) }},
	} {
		if err := tt.chmod(); err != nil {
			t.Fatal(err)
		}
		_, err := Send(path, "STATUS", time.Second)
		if !errors.Is(err, ErrPermission) || errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s not accessible: Send: %v; want ErrPermission naming %s", tt.name, err, path)
		}
	}
	os.Chmod(dir, 0o700)
}

// TestListen: serve replaces only its own stale socket at the control
// path; a live server's socket and anything that is not a socket are left
// alone, with an error that names the path.
func TestListen(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, path string)
		err     string // "" = Listen succeeds
		survive bool   // what was at path is still there, untouched
	}{
		{"nothing there", func(*testing.T, string) {}, "", false},
		{"stale socket", staleSocket, "", false},
		{"running server", func(t *testing.T, path string) { serve(t, path, &recorder{}) }, "is in use by a running server", true},
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "a regular file at that path", true},
		{"empty directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "a directory at that path", true},
		{"directory with files", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(path, "x"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "a directory at that path", true},
		{"link to a socket", func(t *testing.T, path string) {
			target := path + ".real"
			staleSocket(t, target)
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, "a symbolic link at that path", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "control.sock")
			tt.setup(t, path)
			before, _ := os.Lstat(path)
			ln, err := Listen(path)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				ln.Close()
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("Listen succeeded; want an error saying %q", tt.err)
			}
			if !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), path) {
				t.Errorf("Listen: %v; want it to name %s and say %q", err, path, tt.err)
			}
			if !strings.Contains(err.Error(), `"control"`) {
				t.Errorf("Listen: %v; want it to name the \"control\" key", err)
			}
			after, aerr := os.Lstat(path)
			if aerr != nil || !os.SameFile(before, after) || after.ModTime() != before.ModTime() {
				t.Errorf("what was at %s changed: %v", path, aerr)
			}
		})
	}
	// The running server of the case above still answers on its socket.
	path := filepath.Join(t.TempDir(), "control.sock")
	serve(t, path, &recorder{})
	if _, err := Listen(path); err == nil {
		t.Fatal("second Listen on a live socket succeeded")
	}
	if out, err := Send(path, "STATUS", time.Second); err != nil || out != "up" {
		t.Fatalf("first server after a second Listen: %q, %v", out, err)
	}
}

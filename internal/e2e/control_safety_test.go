package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/dnstest"
)

// TestTrustLogLineInjection: clients put addresses into everything of
// theirs that mxguard logs (MAIL FROM, RCPT TO, with quotes and escapes;
// HELO and a Subject besides). `mxguard trust` given those real lines
// trusts the client that sent them and never an address it wrote: the
// injected 127.0.0.66 is still limited afterwards, and 10.66.66.66 is in no
// file.
func TestTrustLogLineInjection(t *testing.T) {
	t.Parallel()
	access := writeFile(t, t.TempDir(), "access", "From:reject.test    REJECT\n")
	m := startMXLoopback(t, fmt.Sprintf(`trusted_networks = ["127.0.0.1/32"]
access_map = %q
[limits]
client_rate = 2
`, access))

	attacks := []struct {
		name, src string
		cmds      []string // after the greeting; each reply only checked for a 2xx/3xx/5xx start
		replies   []string
		log       string // in the line to feed to trust, besides ip=src
	}{
		{"RCPT TO local part, the battery's case", "127.0.0.77",
			[]string{"EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<ip=10.66.66.66@evil.test>"},
			[]string{"250", "250", "550 5.7.1"}, "relaying denied for <ip=10.66.66.66@evil.test>"},
		{"RCPT TO local part", "127.0.0.78",
			[]string{"EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<ip=127.0.0.66@evil.test>"},
			[]string{"250", "250", "550 5.7.1"}, "relaying denied"},
		{"MAIL FROM local part", "127.0.0.79",
			[]string{"EHLO client.example", "MAIL FROM:<ip=127.0.0.66@reject.test>"},
			[]string{"250", "550 5.7.1"}, "rejecting sender"},
		{"quoted local part with spaces", "127.0.0.80",
			[]string{"EHLO client.example", `MAIL FROM:<"x ip=127.0.0.66 reason=relay"@reject.test>`},
			[]string{"250", "550 5.7.1"}, "rejecting sender"},
		{"quote breaking out", "127.0.0.81",
			[]string{"EHLO client.example", "MAIL FROM:<a@example.org>", `RCPT TO:<"x\" ip=127.0.0.66 msg=\"y"@evil.test>`},
			[]string{"250", "250", "550 5.7.1"}, "relaying denied"},
		{"HELO and IPv6 literals", "127.0.0.82",
			[]string{"EHLO [IPv6:2001:db8::66]", "MAIL FROM:<a@[127.0.0.66]>", "RCPT TO:<ip=127.0.0.66@[IPv6:2001:db8::66]>"},
			[]string{"250", "250", "550 5.7.1"}, "relaying denied"},
		{"sender and Subject of an accepted message", "127.0.0.83",
			[]string{"EHLO ip=127.0.0.66", "MAIL FROM:<ip=127.0.0.66@example.org>", "RCPT TO:<bob@localhost>", "DATA",
				"Subject: \"ip=127.0.0.66\" relay=[127.0.0.66]\r\n\r\nhello\r\n."},
			[]string{"250", "250", "250", "354", "250"}, "accepted"},
	}
	lines := map[string]string{}
	for _, a := range attacks {
		c, line, _ := greet(t, a.src, m.addr)
		expect(t, line, "220")
		for i, cmd := range a.cmds {
			expect(t, c.cmd(cmd), a.replies[i])
		}
		c.quit()
		lines[a.src] = m.waitLogAll(5*time.Second, a.log, "ip="+a.src+" ")
	}

	for _, a := range attacks {
		out, err := m.mxctl("trust", lines[a.src])
		if err != nil {
			t.Errorf("%s: mxguard trust %q: %v\n%s", a.name, lines[a.src], err, out)
			continue
		}
		want := "client " + a.src + " (ip= field of an mxguard log line, "
		if !strings.HasPrefix(out, want) || !strings.Contains(out, "trusted "+a.src+"/32") {
			t.Errorf("%s: mxguard trust on %q said:\n%s\nwant %q, then the server's \"trusted %s/32\"", a.name, lines[a.src], out, want, a.src)
		}
		if strings.Contains(out, "10.66.66.66") || strings.Contains(out, "127.0.0.66/") {
			t.Errorf("%s: trusted the injected address:\n%s", a.name, out)
		}
	}

	// Lines that are not as mxguard wrote them are refused, with the reason.
	refused := []struct {
		name string
		args []string
		say  string
		code int
	}{
		{"two ip= fields", []string{lines["127.0.0.78"] + " ip=127.0.0.66"}, "2 ip= fields", 1},
		{"no ip= field", []string{m.waitLogAll(5*time.Second, "listening")}, "no ip= field", 1},
		{"split by the shell", strings.Fields(lines["127.0.0.78"]), "in single quotes", 2},
		{"sendmail from= with a forged relay=", []string{`Mar 29 21:14:07 mx sm-mta[4211]: n2TKE7Zq004211: from=<"x, relay=[127.0.0.66],"@evil.test>, size=1, class=0, nrcpts=1, proto=ESMTP, daemon=MTA, relay=[127.0.0.84]`}, "ambiguous", 1},
		{"sendmail User unknown", []string{`Mar 29 21:14:07 mx sm-mta[4211]: n2TKE7Zq004211: <x [127.0.0.66]: possible SMTP attack: command=AUTH>... User unknown`}, "names no client", 1},
	}
	for _, r := range refused {
		out, err := m.mxctl(append([]string{"trust"}, r.args...)...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != r.code || !strings.Contains(out, r.say) {
			t.Errorf("%s: mxguard trust: %v\n%s\nwant exit %d and %q", r.name, err, out, r.code, r.say)
		}
	}

	// The file holds exactly the clients, and the server acts on it: the
	// injected address is still limited, a trusted client is not.
	trusted := readFile(t, filepath.Join(m.dir, "data/trusted.txt"))
	for _, a := range attacks {
		if !strings.Contains(trusted, a.src+"/32 ") {
			t.Errorf("trusted.txt lacks %s:\n%s", a.src, trusted)
		}
	}
	if strings.Contains(trusted, "10.66.66.66") || strings.Contains(trusted, "127.0.0.66") || strings.Contains(trusted, "127.0.0.84") {
		t.Errorf("trusted.txt holds an injected address:\n%s", trusted)
	}
	for _, src := range []string{"127.0.0.66", "127.0.0.78"} {
		var line string
		for range 3 {
			var c *client
			c, line, _ = greet(t, src, m.addr)
			if strings.HasPrefix(line, "220") {
				c.quit()
			} else {
				c.closed()
			}
		}
		limited := line == "421 4.3.2 Connection rate limit exceeded."
		if limited != (src == "127.0.0.66") {
			t.Errorf("3rd connection from %s got %q; only the injected 127.0.0.66 should still be limited", src, line)
		}
	}
}

// nobody returns the credentials of the unprivileged user the permission
// tests run the command as, or skips the test when it cannot switch user.
func nobody(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot run the command as another user to meet a socket it may not open")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// publicDir makes a directory that every user may enter (t.TempDir's
// parent is private to root).
func publicDir(t *testing.T, perm os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mxguard-e2e-public")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestControlPermission: a user who may not open the control socket of a
// running server is told so, not that no server runs, and trust does not
// go around the server by writing its file (which this user could write).
// When no server runs, the same user's trust writes the file.
func TestControlPermission(t *testing.T) {
	t.Parallel()
	cred := nobody(t)
	pub := publicDir(t, 0o755)
	bin := filepath.Join(pub, "mxguard")
	copyFile(t, binary, bin, 0o755)
	ctlDir := filepath.Join(pub, "ctl")
	files := filepath.Join(pub, "files") // writable by anyone: only the server's refusal keeps nobody out
	for _, d := range []string{ctlDir, files} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(files, 0o777)
	sock := filepath.Join(ctlDir, "control.sock")
	paths := fmt.Sprintf("control = %q\ntrust_file = %q\ndeny_file = %q\n", sock,
		filepath.Join(files, "trusted.txt"), filepath.Join(files, "denied.txt"))
	config := writeFile(t, pub, "mxguard.toml", paths)
	m := startMXLoopback(t, paths)

	asNobody := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{args[0], "--config", config}, args[1:]...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = pub
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		}
		t.Fatalf("running %v as nobody: %v", args, err)
		return "", 0
	}
	refused := func(what string, args ...string) {
		t.Helper()
		out, code := asNobody(args...)
		for _, want := range []string{"permission denied on the control socket " + sock, "run this command as the user mxguard runs as"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: mxguard %v as nobody said:\n%s\nwant %q", what, args, out, want)
			}
		}
		if code != 1 || strings.Contains(out, "not listening") || strings.Contains(out, "not running") {
			t.Errorf("%s: mxguard %v as nobody: exit %d:\n%s\nwant exit 1, and no word of a server not running", what, args, code, out)
		}
	}

	// The socket itself is the server's own (0600).
	refused("0600 socket", "trust", "192.0.2.7")
	refused("0600 socket", "deny", "192.0.2.8")
	refused("0600 socket", "status")
	refused("0600 socket", "reload")
	// Its directory closed to others, as data_dir is by default.
	if err := os.Chmod(ctlDir, 0o700); err != nil {
		t.Fatal(err)
	}
	refused("closed directory", "trust", "192.0.2.7")
	for _, f := range []string{"trusted.txt", "denied.txt"} {
		if _, err := os.Stat(filepath.Join(files, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s written behind the running server's back: %v", f, err)
		}
	}
	out, err := m.mxctl("trust", "192.0.2.7") // its own user still may
	if err != nil || !strings.Contains(out, "trusted 192.0.2.7/32") {
		t.Errorf("mxguard trust as root: %v\n%s", err, out)
	}

	// No server: the command writes the file itself, for the next start,
	// and reports plainly when it may not (root's server made trusted.txt).
	m.stop()
	os.Chmod(ctlDir, 0o755)
	if out, code := asNobody("deny", "192.0.2.9"); code != 0 || !strings.Contains(out, "server not running") {
		t.Errorf("mxguard deny as nobody with no server: exit %d:\n%s", code, out)
	}
	if got := readFile(t, filepath.Join(files, "denied.txt")); !strings.Contains(got, "192.0.2.9/32") {
		t.Errorf("denied.txt after deny with no server:\n%s", got)
	}
	out, code := asNobody("trust", "192.0.2.10")
	if code != 1 || !strings.Contains(out, "the trust file could not be written: open "+filepath.Join(files, "trusted.txt")+": permission denied") {
		t.Errorf("mxguard trust as nobody, trusted.txt root's: exit %d:\n%s", code, out)
	}
}

// TestTrustFileWriteError: with no server running, trust writes the file
// itself, and says plainly when it cannot.
func TestTrustFileWriteError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "blocker", "a file where a directory should be\n")
	config := writeFile(t, dir, "mxguard.toml", fmt.Sprintf("control = %q\ntrust_file = %q\n",
		filepath.Join(dir, "control.sock"), filepath.Join(dir, "blocker", "trusted.txt")))
	out, err := exec.Command(binary, "trust", "--config", config, "192.0.2.7").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 ||
		!strings.Contains(string(out), "the trust file could not be written") || !strings.Contains(string(out), "not a directory") {
		t.Errorf("mxguard trust with an unwritable trust file: %v\n%s", err, out)
	}
}

// TestControlSocketPath: serve takes the control path over only from a
// stale socket of its own kind; a running server's socket, a file or a
// directory there stop it with an error naming the path and the key, and
// are left as they were.
func TestControlSocketPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	// serveFails runs serve with the control socket at ctl and returns
	// what it said, failing the test unless it exits 1.
	serveFails := func(ctl string) string {
		t.Helper()
		d := t.TempDir()
		config := writeFile(t, d, "mxguard.toml", fmt.Sprintf("listen = [\"127.0.0.1:%d\"]\ndata_dir = %q\nhostname = \"mx.test\"\nresolver = %q\ncontrol = %q\n",
			freePort(t), filepath.Join(d, "data"), dnstest.Start(t).Addr, ctl))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, binary, "serve", "--config", config).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("serve with control = %s: %v, want exit 1\n%s", ctl, err, out)
		}
		return string(out)
	}
	// serve checks the configured paths before it listens (config's
	// CheckPaths), so the error names the key with its line.
	check := func(out, ctl, what string) {
		t.Helper()
		if !strings.Contains(out, "mxguard.toml:5: control: "+ctl+" exists and is not a socket ("+what+")") {
			t.Errorf("serve with control = %s said:\n%s\nwant the key, its line, the path and %q", ctl, out, what)
		}
	}

	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	file := filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, full, "keep", "x")
	writeFile(t, dir, "file", "keep me")
	check(serveFails(empty), empty, "a directory")
	check(serveFails(full), full, "a directory")
	check(serveFails(file), file, "a regular file")
	if fi, err := os.Stat(empty); err != nil || !fi.IsDir() {
		t.Errorf("the empty directory at the control path is gone: %v", err)
	}
	if readFile(t, filepath.Join(full, "keep")) != "x" || readFile(t, file) != "keep me" {
		t.Error("what was at the control path changed")
	}

	// A running server keeps its socket; a second one does not start.
	sock := filepath.Join(dir, "control.sock")
	m := startMXLoopback(t, fmt.Sprintf("control = %q\n", sock))
	if out := serveFails(sock); !strings.Contains(out, "control socket "+sock+" is in use by a running server") {
		t.Errorf("a second serve on the same control socket said:\n%s", out)
	}
	if out, err := m.mxctl("status"); err != nil || !strings.HasPrefix(out, "up ") {
		t.Fatalf("the first server after a second one tried its socket: %v: %s", err, out)
	}

	// Killed, it leaves its socket behind: stale, and replaced at the next start.
	m.kill()
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("no stale socket after SIGKILL: %v", err)
	}
	m.mu.Lock()
	m.log.Reset()
	m.mu.Unlock()
	m.start()
	if out, err := m.mxctl("status"); err != nil || !strings.HasPrefix(out, "up ") {
		t.Fatalf("status after a start over a stale socket: %v: %s", err, out)
	}
}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

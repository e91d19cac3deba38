package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mxguard/mxguard/internal/dnstest"
	"github.com/mxguard/mxguard/internal/redistest"
	"github.com/mxguard/mxguard/internal/smtpsink"
)

// doctorChecks are the names `mxguard doctor` prints, in its order
// (docs/SPEC.md).
var doctorChecks = []string{"config", "listen", "dns", "fsync", "space", "inodes", "nofile", "redis", "relay"}

// doctor runs `mxguard doctor --config config` (as cred when not nil) and
// returns its report (stdout) and exit status. Anything on stderr (a race
// report, a library's log line) fails the test: the report is all there is.
func doctor(t *testing.T, bin, config string, cred *syscall.Credential) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, "doctor", "--config", config)
	cmd.Dir = filepath.Dir(config)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if stderr.Len() > 0 {
		t.Errorf("mxguard doctor --config %s wrote on stderr:\n%s", config, stderr.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("mxguard doctor: %v\n%s", err, out)
	return "", 0
}

// findingLine returns the line of check at level ("ok  ", "WARN", "FAIL")
// that contains every one of subs, or "".
func findingLine(out, level, check string, subs ...string) string {
next:
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, level+" "+check+": ") {
			continue
		}
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return l
	}
	return ""
}

var doctorLine = regexp.MustCompile(`^(ok  |WARN|FAIL) ([a-z]+): \S`)
var doctorSummary = regexp.MustCompile(`^summary: (\d+) ok, (\d+) WARN, (\d+) FAIL$`)

// checkDoctorFormat fails the test unless every line of out is a finding
// or, last, the summary, whose counts match the lines.
func checkDoctorFormat(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	count := map[string]int{}
	for _, l := range lines[:len(lines)-1] {
		m := doctorLine.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("not a finding: %q", l)
			continue
		}
		count[strings.TrimSpace(m[1])]++
	}
	want := fmt.Sprintf("summary: %d ok, %d WARN, %d FAIL", count["ok"], count["WARN"], count["FAIL"])
	if last := lines[len(lines)-1]; last != want || !doctorSummary.MatchString(last) {
		t.Errorf("last line %q, want %q", last, want)
	}
}

// TestDoctor runs the real binary's doctor on a host with everything the
// configuration names running on loopback (DNS server, Redis, smtp-sink):
// exit 0 and every check named; then with the listen port taken, Redis gone
// while on_redis_error is "tempfail" and the relay gone: exit 1, each named
// as a FAIL; a file that does not load; and no --config, a usage error.
func TestDoctor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	dns := dnstest.Start(t)
	rd := redistest.StartServer(t)
	sink := smtpsink.Start(t, smtpsink.Options{})
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	conf := func(listen string) string {
		return fmt.Sprintf(`hostname = "mx.test"
listen = [%q]
data_dir = %q
resolver = %q
[limits]
max_daemon_children = 100
[recipients]
catch_all = true
[fleet]
redis = %q
on_redis_error = "tempfail"
[delivery]
relay = "smtp://%s"
`, listen, data, dns.Addr, rd.Addr, sink.Addr)
	}

	good := writeFile(t, dir, "good.toml", conf("127.0.0.1:0"))
	out, code := doctor(t, binary, good, nil)
	t.Logf("mxguard doctor on a good configuration:\n%s", out)
	if code != 0 {
		t.Errorf("exit %d on a good configuration, want 0:\n%s", code, out)
	}
	checkDoctorFormat(t, out)
	for _, c := range doctorChecks {
		if findingLine(out, "ok  ", c) == "" && findingLine(out, "WARN", c) == "" {
			t.Errorf("no ok or WARN line for %s:\n%s", c, out)
		}
	}
	for _, l := range []struct{ check, text string }{
		{"config", good + " loads"},
		{"listen", "127.0.0.1:0 can be bound"},
		{"dns", "through " + dns.Addr},
		{"fsync", "on " + data + " ("},
		{"redis", rd.Addr + " answers PING"},
		{"relay", "smtp://" + sink.Addr + " answers"},
	} {
		if findingLine(out, "ok  ", l.check, l.text) == "" && findingLine(out, "WARN", l.check, l.text) == "" {
			t.Errorf("no %s line with %q:\n%s", l.check, l.text, out)
		}
	}
	if left, _ := os.ReadDir(data); len(left) != 0 {
		t.Errorf("doctor left %d files in data_dir, first %s", len(left), left[0].Name())
	}

	rd.Stop()
	sink.Stop()
	bad := writeFile(t, dir, "bad.toml", conf(busy.Addr().String()))
	out, code = doctor(t, binary, bad, nil)
	t.Logf("mxguard doctor on a bad one:\n%s", out)
	if code != 1 {
		t.Errorf("exit %d, want 1:\n%s", code, out)
	}
	checkDoctorFormat(t, out)
	for _, l := range []struct{ check, text string }{
		{"listen", busy.Addr().String() + " is in use"},
		{"redis", "every client would get 421"},
		{"relay", "connect to smtp://" + sink.Addr},
	} {
		if findingLine(out, "FAIL", l.check, l.text) == "" {
			t.Errorf("no FAIL %s line with %q:\n%s", l.check, l.text, out)
		}
	}
	if !strings.HasSuffix(out, ", 3 FAIL\n") {
		t.Errorf("want 3 FAILs:\n%s", out)
	}

	broken := writeFile(t, dir, "broken.toml", "hostname = \"mx.test\"\nmax_children = 5\n")
	out, code = doctor(t, binary, broken, nil)
	if code != 1 || findingLine(out, "FAIL", "config", broken+":2") == "" || !strings.HasSuffix(out, "summary: 0 ok, 0 WARN, 1 FAIL\n") {
		t.Errorf("a file that does not load: exit %d, want 1, its FAIL and nothing else:\n%s", code, out)
	}

	cmd := exec.Command(binary, "doctor")
	outb, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(outb), "--config FILE is required") {
		t.Errorf("doctor without --config: %v, want exit 2 and the usage:\n%s", err, outb)
	}
}

// TestDoctorRelaySize: a relay target that takes smaller messages than
// max_message_size (here a second mxguard with max_message_size = 1MiB) is
// a warning naming the figure: those messages would be accepted, then
// bounced. A warning is no failure: exit 0.
func TestDoctorRelaySize(t *testing.T) {
	t.Parallel()
	back := startMXLoopback(t, "[limits]\nmax_message_size = \"1MiB\"\n")
	dir := t.TempDir()
	config := writeFile(t, dir, "mxguard.toml", fmt.Sprintf(`hostname = "front.test"
listen = ["127.0.0.1:0"]
data_dir = %q
resolver = %q
[delivery]
relay = "smtp://%s"
`, dir, dnstest.Start(t).Addr, back.addr))
	out, code := doctor(t, binary, config, nil)
	if code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, out)
	}
	if findingLine(out, "WARN", "relay", "at most 1048576 octets (SIZE)", "max_message_size is 26214400") == "" {
		t.Errorf("no WARN relay line naming both sizes:\n%s", out)
	}
}

// TestDoctorPrivilegedPort: a port below 1024 that the user may not bind
// is a FAIL saying why and what to grant, not a bare error.
func TestDoctorPrivilegedPort(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		t.Skipf("no ip_unprivileged_port_start: %v", err)
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || n <= 25 {
		t.Skipf("ip_unprivileged_port_start is %q: port 25 needs no privilege here", b)
	}
	var cred *syscall.Credential
	bin := binary
	pub := publicDir(t, 0o755)
	if os.Geteuid() == 0 {
		// Root may bind it: run as nobody, from where nobody can.
		cred = nobody(t)
		bin = filepath.Join(pub, "mxguard")
		copyFile(t, binary, bin, 0o755)
	}
	config := writeFile(t, pub, "mxguard.toml", fmt.Sprintf("hostname = \"mx.test\"\nlisten = [\"127.0.0.1:25\"]\ndata_dir = %q\nresolver = %q\n",
		filepath.Join(pub, "data"), dnstest.Start(t).Addr))
	out, code := doctor(t, bin, config, cred)
	t.Logf("as uid %v:\n%s", cred, out)
	if code != 1 || findingLine(out, "FAIL", "listen", "127.0.0.1:25: permission denied", "CAP_NET_BIND_SERVICE") == "" {
		t.Errorf("exit %d, want 1 and a FAIL listen line saying permission denied and CAP_NET_BIND_SERVICE:\n%s", code, out)
	}
}

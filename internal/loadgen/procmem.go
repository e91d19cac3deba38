package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A ProcSet selects the server processes whose memory [Idle] measures:
// fixed process IDs, every process whose name matches a pattern, or every
// process in a cgroup, the last two looked up afresh at each sample because
// Postfix starts an smtpd per client.
type ProcSet struct {
	proc    string // the /proc mount, replaceable for tests
	pids    []int
	pattern *regexp.Regexp
	cgroup  string // a cgroup directory: its cgroup.procs lists the processes
}

// ParseProcs reads "cgroup:DIR" (the processes of the cgroup directory
// DIR, such as /sys/fs/cgroup/cpuacct/mxbench/pf, where bench/run.sh starts
// each server: exactly a server's processes, whatever their names and
// parents), a comma-separated list of process IDs ("812,813") or, failing
// both, a regular expression matched against process names as
// /proc/PID/comm gives them ("^(smtpd|master|anvil)$" for Postfix).
func ParseProcs(spec string) (*ProcSet, error) {
	s := &ProcSet{proc: "/proc"}
	if dir, ok := strings.CutPrefix(spec, "cgroup:"); ok {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			return nil, fmt.Errorf("process list %q: not a cgroup: %w", spec, err)
		}
		s.cgroup = dir
		return s, nil
	}
	var bad bool
	for f := range strings.SplitSeq(spec, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid <= 0 {
			bad = true
			break
		}
		s.pids = append(s.pids, pid)
	}
	if !bad {
		return s, nil
	}
	s.pids = nil
	re, err := regexp.Compile(spec)
	if err != nil {
		return nil, fmt.Errorf("process list %q: neither PIDs nor a pattern: %v", spec, err)
	}
	s.pattern = re
	return s, nil
}

// String describes the selection.
func (s *ProcSet) String() string {
	if s.cgroup != "" {
		return "processes of cgroup " + s.cgroup
	}
	if s.pattern != nil {
		return "processes named /" + s.pattern.String() + "/"
	}
	return fmt.Sprintf("PIDs %v", s.pids)
}

// Mem is memory summed over a ProcSet's processes, in bytes. RSS counts
// pages shared between processes once per process, so for Postfix's many
// smtpd processes it overstates the cost; PSS divides each shared page
// among its sharers and is the fair figure there. For one process (such
// as mxguard) the two are close.
type Mem struct {
	Procs int   `json:"processes"`
	RSS   int64 `json:"rss_bytes"` // VmRSS in /proc/PID/status
	PSS   int64 `json:"pss_bytes"` // Pss in /proc/PID/smaps_rollup
}

// Sample reads the memory of the selected processes. A listed PID that is
// gone is an error; a process matching the pattern or in the cgroup that
// ends while it is read is skipped.
func (s *ProcSet) Sample() (Mem, error) {
	pids, err := s.list()
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	for _, pid := range pids {
		dir := filepath.Join(s.proc, strconv.Itoa(pid))
		rss, err := readProcField(filepath.Join(dir, "status"), "VmRSS:")
		if err == nil {
			var pss int64
			if pss, err = readProcField(filepath.Join(dir, "smaps_rollup"), "Pss:"); err == nil {
				m.Procs++
				m.RSS += rss
				m.PSS += pss
				continue
			}
		}
		if s.dynamic() && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoField)) {
			continue // ended meanwhile, or a kernel thread
		}
		return Mem{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return m, nil
}

// dynamic reports whether the selection is looked up at each sample, so
// that a process may end between the lookup and the reading.
func (s *ProcSet) dynamic() bool { return s.pattern != nil || s.cgroup != "" }

// list returns the selected processes' IDs as of now.
func (s *ProcSet) list() ([]int, error) {
	switch {
	case s.cgroup != "":
		return s.members()
	case s.pattern != nil:
		return s.match()
	}
	return s.pids, nil
}

// members lists the processes in the cgroup.
func (s *ProcSet) members() ([]int, error) {
	data, err := os.ReadFile(filepath.Join(s.cgroup, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for f := range strings.FieldsSeq(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%s: process ID %q", filepath.Join(s.cgroup, "cgroup.procs"), f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// match lists the processes whose name matches the pattern.
func (s *ProcSet) match() ([]int, error) {
	entries, err := os.ReadDir(s.proc)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(s.proc, e.Name(), "comm"))
		if err != nil {
			continue // ended since ReadDir
		}
		if s.pattern.Match(bytes.TrimSuffix(comm, []byte("\n"))) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// readProcField reads one "Key:   123 kB" line of a /proc file.
func readProcField(path, key string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseProcField(data, key)
}

// parseProcField finds the line starting with key in a /proc status-style
// file and returns its value in bytes.
func parseProcField(data []byte, key string) (int64, error) {
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte(key))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s %q: want a number of kB", key, bytes.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<40 {
			return 0, fmt.Errorf("%s %q: want a number of kB", key, f[0])
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%w %s", errNoField, key)
}

// errNoField is a /proc file without the line asked for, as kernel
// threads have no VmRSS.
var errNoField = errors.New("no line")

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, which
// Linux keeps at 100 for this interface whatever the kernel's own HZ
// (getconf CLK_TCK).
const userHZ = 100

// CPU returns the CPU time, user and system, that the selected processes
// have used so far, with what they collected from children that exited
// (Postfix's master reaps its smtpd processes): fields 14 to 17 of
// /proc/PID/stat. A listed PID that is gone is an error; a process
// matching the pattern or in the cgroup that ends while it is read is
// skipped.
func (s *ProcSet) CPU() (time.Duration, error) {
	pids, err := s.list()
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, pid := range pids {
		data, err := os.ReadFile(filepath.Join(s.proc, strconv.Itoa(pid), "stat"))
		if err != nil {
			if s.dynamic() && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return 0, fmt.Errorf("process %d: %w", pid, err)
		}
		t, err := parseStatCPU(data)
		if err != nil {
			return 0, fmt.Errorf("process %d: %w", pid, err)
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// parseStatCPU sums utime, stime, cutime and cstime of a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may hold spaces
// and parentheses itself, so the fields are counted from the last ')'.
func parseStatCPU(data []byte) (int64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(data[i+1:])) // f[0] is field 3, the state
	if len(f) < 15 {
		return 0, fmt.Errorf("stat: %d fields after the name, want at least 15", len(f))
	}
	var sum int64
	for _, s := range f[11:15] { // fields 14-17
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("stat: CPU time %q", s)
		}
		sum += n
	}
	return sum, nil
}

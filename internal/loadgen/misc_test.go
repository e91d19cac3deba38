package loadgen

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func itoa(n int) string { return strconv.Itoa(n) }

func TestParseAddrs(t *testing.T) {
	tests := []struct {
		in      string
		want    []string // the first addresses Next hands out
		wantErr string
	}{
		{in: "", want: nil},
		{in: "127.0.0.2", want: []string{"127.0.0.2", "127.0.0.2"}},
		{in: "127.0.0.2-127.0.0.4", want: []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"}},
		{in: "127.0.0.255-127.0.1.0", want: []string{"127.0.0.255", "127.0.1.0", "127.0.0.255"}},
		{in: "127.0.0.9, ::1", want: []string{"127.0.0.9", "::1", "127.0.0.9"}},
		{in: "::1-::2", want: []string{"::1", "::2", "::1"}},
		{in: "::ffff:127.0.0.1-127.0.0.2", want: []string{"127.0.0.1", "127.0.0.2"}},
		{in: "127.0.0.4-127.0.0.2", wantErr: "ends before"},
		{in: "127.0.0.1-::1", wantErr: "mixes"},
		{in: "127.0.0.1-127.1.0.0", want: []string{"127.0.0.1", "127.0.0.2"}},
		{in: "127.0.0.1-127.1.0.1", wantErr: "more than"},
		{in: "localhost", wantErr: "address range"},
		{in: "127.0.0.1,", wantErr: "address range"},
		{in: "127.0.0.1-", wantErr: "address range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParseAddrs(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if p.Len() != 0 || p.Next() != nil {
					t.Fatalf("pool %v, want empty", p)
				}
				return
			}
			var got []string
			for range tt.want {
				got = append(got, p.Next().IP.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Next gives %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var d []time.Duration
		for _, n := range ns {
			d = append(d, time.Duration(n)*time.Millisecond)
		}
		return d
	}
	var hundred []time.Duration
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		name    string
		samples []time.Duration
		want    Percentiles
	}{
		{"none", nil, Percentiles{}},
		{"one", ms(7), Percentiles{1, 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond}},
		{"hundred reversed", hundred, Percentiles{100, 50 * time.Millisecond, 90 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond}},
		{"ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 1000), Percentiles{10, 5 * time.Millisecond, 9 * time.Millisecond, 1000 * time.Millisecond, 1000 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.samples); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func BenchmarkSummarize(b *testing.B) {
	src := make([]time.Duration, 100000)
	for i := range src {
		src[i] = time.Duration(i*7919%100000) * time.Microsecond
	}
	buf := make([]time.Duration, len(src))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, src)
		summarize(buf)
	}
}

func TestWaitMaildir(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Error(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Error(err)
		}
	}
	// Files in cur/ and tmp/ are not delivered-and-new; directories in new/
	// are not messages.
	write("a/cur/1")
	write("a/tmp/2")
	write("a/new/sub/3")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n, err := WaitMaildir(ctx, dir, 1, 5*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || n != 0 {
		t.Fatalf("found %d, %v; want 0 and a deadline", n, err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		write("a/new/4")
		write("b/c/new/5")
	}()
	n, err = WaitMaildir(testCtx(t), dir, 2, 5*time.Millisecond)
	<-done
	if err != nil || n != 2 {
		t.Errorf("found %d, %v; want 2", n, err)
	}

	if n, err := WaitMaildir(testCtx(t), filepath.Join(dir, "missing"), 0, time.Millisecond); err != nil || n != 0 {
		t.Errorf("missing dir: %d, %v; want 0, nil", n, err)
	}
}

func TestParseProcs(t *testing.T) {
	tests := []struct {
		spec     string
		pids     []int
		pattern  string
		wantErr  bool
		selfSeen bool // the test binary itself is selected
	}{
		{spec: itoa(os.Getpid()), pids: []int{os.Getpid()}, selfSeen: true},
		{spec: "1, " + itoa(os.Getpid()), pids: []int{1, os.Getpid()}},
		{spec: `^loadgen\.test$`, pattern: `^loadgen\.test$`, selfSeen: true},
		{spec: "smtpd", pattern: "smtpd"},
		{spec: "0", pattern: "0"},
		{spec: "(", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			s, err := ParseProcs(tt.spec)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseProcs(%q) succeeded", tt.spec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.pids, tt.pids) || (s.pattern == nil) != (tt.pattern == "") {
				t.Fatalf("got %v, want PIDs %v or pattern %q", s, tt.pids, tt.pattern)
			}
			if !tt.selfSeen {
				return
			}
			m, err := s.Sample()
			if err != nil {
				t.Fatal(err)
			}
			if m.Procs < 1 || m.RSS < 1<<20 || m.PSS <= 0 || m.PSS > m.RSS {
				t.Errorf("memory %+v; want this process's", m)
			}
		})
	}
}

// TestParseProcsCgroup reads a cgroup's members at each sample: a
// directory with a cgroup.procs file, as the kernel's cgroup file systems
// have. A member that is gone by the time it is read is skipped, as is a
// process ending under a pattern.
func TestParseProcsCgroup(t *testing.T) {
	dir := t.TempDir()
	if _, err := ParseProcs("cgroup:" + dir); err == nil {
		t.Fatal("a directory without cgroup.procs was taken for a cgroup")
	}
	procs := filepath.Join(dir, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(itoa(os.Getpid())+"\n999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ParseProcs("cgroup:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if m.Procs != 1 || m.RSS < 1<<20 || m.PSS <= 0 {
		t.Errorf("memory %+v; want this process's alone", m)
	}
	if cpu, err := s.CPU(); err != nil || cpu < 0 {
		t.Errorf("CPU %v, %v", cpu, err)
	}
	// The members are read afresh: an emptied cgroup has none.
	if err := os.WriteFile(procs, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Sample(); err != nil || m.Procs != 0 {
		t.Errorf("empty cgroup: %+v, %v", m, err)
	}
	if err := os.WriteFile(procs, []byte("12 x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sample(); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("a cgroup.procs with %q: error %v", "x", err)
	}
}

func TestSampleGonePID(t *testing.T) {
	s, err := ParseProcs("999999999")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sample(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v, want one for a missing process", err)
	}
}

func TestParseProcField(t *testing.T) {
	tests := []struct {
		data string
		key  string
		want int64
		err  bool
	}{
		{"Name:\tx\nVmRSS:\t    2032 kB\n", "VmRSS:", 2032 << 10, false},
		{"Rss: 1 kB\nPss:                 259 kB\n", "Pss:", 259 << 10, false},
		{"Pss_Dirty: 5 kB\nPss: 7 kB", "Pss:", 7 << 10, false},
		{"VmRSS: 12 MB\n", "VmRSS:", 0, true},
		{"VmRSS: -1 kB\n", "VmRSS:", 0, true},
		{"VmRSS:\n", "VmRSS:", 0, true},
		{"Name: kthreadd\n", "VmRSS:", 0, true},
	}
	for _, tt := range tests {
		got, err := parseProcField([]byte(tt.data), tt.key)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseProcField(%q, %q) = %d, %v; want %d, error %v", tt.data, tt.key, got, err, tt.want, tt.err)
		}
	}
}

func TestRaiseNoFileLimit(t *testing.T) {
	got, err := RaiseNoFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if got != lim.Cur || lim.Cur != lim.Max {
		t.Errorf("returned %d, limit now %d of %d; want the soft limit at the hard one", got, lim.Cur, lim.Max)
	}
}

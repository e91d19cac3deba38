package doctor

import (
	"context"
	"strings"
	"testing"
	"time"
)

// want fails the test unless fs holds exactly one finding of check, at
// level, whose text contains every one of subs; it returns that finding.
func want(t *testing.T, fs []Finding, check string, level Level, subs ...string) Finding {
	t.Helper()
	var got []Finding
	for _, f := range fs {
		if f.Check == check {
			got = append(got, f)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d %s findings, want 1: %q", len(got), check, fs)
	}
	f := got[0]
	if f.Level != level {
		t.Errorf("%s, want level %s", f, level)
	}
	for _, s := range subs {
		if !strings.Contains(f.Text, s) {
			t.Errorf("%s\nlacks %q", f, s)
		}
	}
	return f
}

func TestFindingString(t *testing.T) {
	for _, tt := range []struct {
		f    Finding
		want string
	}{
		{Finding{OK, CheckFsync, "p50 0.41 ms"}, "ok   fsync: p50 0.41 ms"},
		{Finding{Warn, CheckDNS, "slow"}, "WARN dns: slow"},
		{Finding{Fail, CheckListen, "in use"}, "FAIL listen: in use"},
	} {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestFormats(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{group(0), "0"}, {group(999), "999"}, {group(1000), "1,000"}, {group(2400), "2,400"},
		{group(1234567), "1,234,567"}, {group(-1234), "-1,234"},
		{ms(12 * time.Microsecond), "0.012 ms"}, {ms(410 * time.Microsecond), "0.41 ms"}, {ms(12340 * time.Microsecond), "12.3 ms"}, {ms(1500 * time.Millisecond), "1,500 ms"},
		{bytesText(512), "512 B"}, {bytesText(1536), "1.5 KiB"}, {bytesText(100 << 20), "100.0 MiB"}, {bytesText(3 << 30), "3.0 GiB"},
		{days(5 * 24 * time.Hour), "5d"}, {days(90 * time.Minute), "1h30m0s"},
	} {
		if tt.got != tt.want {
			t.Errorf("%q, want %q", tt.got, tt.want)
		}
	}
	for _, tt := range []struct {
		r    float64
		want int64
	}{{2439.0, 2400}, {99.4, 99}, {1951, 2000}, {123456, 120000}, {0, 0}} {
		if got := roundRate(tt.r); got != tt.want {
			t.Errorf("roundRate(%v) = %d, want %d", tt.r, got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tt := range []struct {
		n, p int
		want time.Duration
	}{
		{200, 50, 100}, {200, 99, 198}, {200, 100, 200},
		{1, 50, 1}, {1, 99, 1}, {2, 50, 1}, {2, 99, 2}, {3, 50, 2}, {100, 99, 99},
	} {
		if got := percentile(d[:tt.n], tt.p); got != tt.want {
			t.Errorf("p%d of 1..%d = %d, want %d", tt.p, tt.n, got, tt.want)
		}
	}
}

// TestRun: a file that does not load stops at the config check; an
// interrupted run stops before the next check, and that is a failure.
func TestRun(t *testing.T) {
	path := writeConfig(t, "hostname = \"mx.test\"\nmax_children = 5\n")
	var b strings.Builder
	if !Run(context.Background(), path, &b) {
		t.Error("Run reports no failure for a file that does not load")
	}
	want := "FAIL config: " + path + ":2: "
	if out := b.String(); !strings.HasPrefix(out, want) || !strings.HasSuffix(out, "\nsummary: 0 ok, 0 WARN, 1 FAIL\n") || strings.Count(out, "\n") != 2 {
		t.Errorf("output:\n%s\nwant one line starting %q and the summary", out, want)
	}

	path = writeConfig(t, "hostname = \"mx.test\"\nlisten = [\"127.0.0.1:0\"]\n")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Reset()
	if !Run(ctx, path, &b) {
		t.Error("Run reports no failure when interrupted")
	}
	if out := b.String(); !strings.Contains(out, "\nFAIL doctor: interrupted: not every check ran\nsummary: 1 ok, 0 WARN, 1 FAIL\n") {
		t.Errorf("interrupted run:\n%s", out)
	}
}

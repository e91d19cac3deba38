package stats

import (
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// fullDay is a day with every table and histogram as large as they get,
// each count as long as it gets.
func fullDay(t testing.TB, date time.Time) Day {
	r := NewRecorder(time.Minute, date)
	reasons := []reason.Reason{reason.Pregreet, reason.RateControl, reason.ConnControl, reason.DNSBL, reason.UnknownUser, reason.RelayDenied}
	for i := range MaxDeliverers {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		r.Message(date, a, "mx.sender-with-a-long-name-"+letters(i)+".example-provider.co.uk")
	}
	for i := range MaxRefusers {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, byte(i >> 8), byte(i), 15: 0x01})
		host := "host.dynamic-pool-" + letters(i) + ".broadband-customers.example-provider.co.uk"
		for j, why := range reasons {
			for range j + 1 {
				r.Refused(date, why, a, host)
			}
		}
	}
	d := r.Days()[0]
	for _, h := range []*Hist{&d.Concurrency, &d.AcceptRate, &d.ClientRate, &d.ClientConn} {
		for v := int64(0); v < math.MaxInt64/2; v = Bucket(v + 1) {
			h.AddN(v, math.MaxInt64/4)
		}
	}
	for _, why := range reason.All() {
		if d.Refused == nil {
			d.Refused = map[reason.Reason]int64{}
		}
		d.Refused[why.Reason] = math.MaxInt64
	}
	d.Accepted, d.Sessions, d.Messages = math.MaxInt64, math.MaxInt64, math.MaxInt64
	d.UntrackedDeliveries, d.UntrackedClients = math.MaxInt64, math.MaxInt64
	return d
}

// TestFileSizeBound: KeepDays full days stay under MaxFileSize, and read
// back as they were written.
func TestFileSizeBound(t *testing.T) {
	var days []Day
	for i := range KeepDays {
		days = append(days, fullDay(t, day0.AddDate(0, 0, i)))
	}
	for _, d := range days[:1] {
		if len(d.Networks) != MaxRefusers+MaxDeliverers || len(d.Suffixes) != MaxRefusers+MaxDeliverers {
			t.Fatalf("the full day has %d networks and %d suffixes, want %d", len(d.Networks), len(d.Suffixes), MaxRefusers+MaxDeliverers)
		}
		if d.Concurrency.Len() > maxBuckets || d.Concurrency.Len() < maxBuckets-20 {
			t.Fatalf("the full day's histogram has %d values, want about %d", d.Concurrency.Len(), maxBuckets)
		}
	}
	path := filepath.Join(t.TempDir(), FileName)
	if err := Save(path, days); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d full days: %d bytes (%d a day)", len(days), fi.Size(), fi.Size()/int64(len(days)))
	// The bound docs/SPEC.md states; MaxFileSize, what Load reads, has
	// room above it.
	const stated = 4 << 20
	if fi.Size() > stated || stated > MaxFileSize {
		t.Errorf("%d bytes, over the stated %d (MaxFileSize %d)", fi.Size(), stated, MaxFileSize)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, days) {
		t.Error("the days read back differ from those written")
	}
}

// TestSaveLoad: a round trip, over an older file, leaves nothing else in
// the directory.
func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if days, err := Load(path); err != nil || days != nil {
		t.Fatalf("no file: %v, %v; want nothing and no error", days, err)
	}
	r := NewRecorder(time.Minute, day0)
	r.Sample(day0.Add(time.Second), 3, 2)
	r.Refused(day0.Add(time.Second), reason.Pregreet, netip.MustParseAddr("192.0.2.1"), "a.dsl.example")
	if err := Save(path, []Day{fullDay(t, day0)}); err != nil {
		t.Fatal(err)
	}
	want := r.Days()
	if err := Save(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back %+v\nwant %+v", got, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only %s", len(entries), FileName)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
}

// TestLoadRefuses: a file mxguard did not write, cut short or too large is
// an error naming the file, never a panic or a partial read.
func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	r := NewRecorder(time.Minute, day0)
	r.Refused(day0, reason.Pregreet, netip.MustParseAddr("192.0.2.1"), "a.dsl.example")
	if err := Save(good, r.Days()); err != nil {
		t.Fatal(err)
	}
	whole := readString(t, good)
	for name, content := range map[string]string{
		"truncated":   whole[:len(whole)/2],
		"version":     strings.Replace(whole, `"version":1`, `"version":2`, 1),
		"unknown key": strings.Replace(whole, `"date"`, `"extra":1,"date"`, 1),
		"bad date":    strings.Replace(whole, day0.Format("2006-01-02"), "yesterday", 1),
		"bad network": strings.Replace(whole, "192.0.2.0/24", "192.0.2.7/32", 1),
		"bad suffix":  strings.Replace(whole, `"dsl.example"`, `"x y"`, 1),
		"too large":   whole + strings.Repeat(" ", MaxFileSize),
		"not json":    "hello",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming %s", name, err, p)
		}
	}
}

// letters names i without digits, which Suffix would take for a host's.
func letters(i int) string {
	b := []byte("aaaa")
	for j := len(b) - 1; j >= 0; j-- {
		b[j] = byte('a' + i%26)
		i /= 26
	}
	return string(b)
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

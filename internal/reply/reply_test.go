package reply

import (
	"strings"
	"testing"
)

func TestReplyLineLimit(t *testing.T) {
	long := strings.Repeat("X", 600)
	for _, r := range []*Reply{
		{555, "5.5.4", "Unsupported option: " + long},
		{550, "", long + "\nshort\n" + long},
		{421, "4.7.0", strings.Repeat("Y", 500)}, // exactly 512 with CRLF: kept whole
	} {
		wire := string(r.AppendTo(nil))
		for l := range strings.SplitSeq(strings.TrimSuffix(wire, "\r\n"), "\r\n") {
			if len(l)+2 > 512 {
				t.Errorf("%d %s: reply line of %d octets with CRLF, over 512", r.Code, r.Status, len(l)+2)
			}
		}
	}
	r := &Reply{421, "4.7.0", strings.Repeat("Y", 500)}
	if got := len(r.String()); got != 510 {
		t.Errorf("a reply of exactly 510 octets came out as %d", got)
	}
	r = &Reply{250, "2.0.0", "Ok\nsecond"}
	if got := r.String(); got != "250-2.0.0 Ok\r\n250 2.0.0 second" {
		t.Errorf("short reply changed: %q", got)
	}
}

func TestAppendTo(t *testing.T) {
	for _, tt := range []struct {
		r    Reply
		want string
	}{
		{Reply{421, "4.3.2", "Connection rate limit exceeded."}, "421 4.3.2 Connection rate limit exceeded.\r\n"},
		{Reply{354, "", "End data with <CR><LF>.<CR><LF>"}, "354 End data with <CR><LF>.<CR><LF>\r\n"},
		{Reply{250, "", ""}, "250\r\n"},
		{Reply{250, "2.0.0", ""}, "250 2.0.0\r\n"},
		{Reply{250, "", "mx.test\nPIPELINING\n8BITMIME"}, "250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"},
		{Reply{550, "5.7.1", "first\n\nlast"}, "550-5.7.1 first\r\n550-5.7.1\r\n550 5.7.1 last\r\n"},
		{Reply{250, "", "trailing\n"}, "250-trailing\r\n250\r\n"},
		{Reply{250, "", "\n"}, "250-\r\n250\r\n"},
	} {
		if got := string(tt.r.AppendTo([]byte("x"))); got != "x"+tt.want {
			t.Errorf("%+v: %q, want %q", tt.r, got, "x"+tt.want)
		}
	}
}

// TestAppendToAllocs: rendering a reply into a buffer with room allocates
// nothing, multi-line or not (a flood's refusal is rendered once per
// connection).
func TestAppendToAllocs(t *testing.T) {
	buf := make([]byte, 0, 512)
	for _, r := range []*Reply{
		{421, "4.3.2", "Connection rate limit exceeded."},
		{250, "", "mx.test\nPIPELINING\n8BITMIME"},
	} {
		if n := testing.AllocsPerRun(100, func() { buf = r.AppendTo(buf[:0]) }); n != 0 {
			t.Errorf("%d %q: %v allocations, want 0", r.Code, r.Text, n)
		}
	}
}

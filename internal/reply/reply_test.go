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

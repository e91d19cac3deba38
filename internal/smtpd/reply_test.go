package smtpd

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestReplyLineLimit(t *testing.T) {
	long := strings.Repeat("X", 600)
	for _, r := range []*Reply{
		{555, "5.5.4", "Unsupported option: " + long},
		{550, "", long + "\nshort\n" + long},
		{421, "4.7.0", strings.Repeat("Y", 500)}, // exactly 512 with CRLF: kept whole
	} {
		wire := string(r.appendTo(nil))
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

// TestRepliesBeforeEOF: a client that pipelines a whole transaction and
// closes its side in the middle of its last line still gets the replies to
// the commands it completed, above all the 250 for the message the server
// stored; without it the client would send the message again.
func TestRepliesBeforeEOF(t *testing.T) {
	h := &memHandler{}
	addr := testServer(t, Config{Timeouts: uniform(10 * time.Second)}, h, ConnInfo{})
	nc, br := dial(t, addr)
	expect(t, br, "220")
	nc.Write([]byte("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nhi\r\n.\r\nQUI"))
	nc.(*net.TCPConn).CloseWrite()
	for _, want := range []string{"250 ", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0 Ok: queued as 1"} {
		expect(t, br, want)
	}
	if n := len(h.messages()); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

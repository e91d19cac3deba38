package smtpd

import (
	"net"
	"testing"
	"time"
)

// TestRepliesBeforeEOF: a client that pipelines a whole transaction and
// closes its side in the middle of its last line still gets the replies to
// the commands it completed, above all the 250 for the message the server
// stored; without it the client would send the message again.
func TestRepliesBeforeEOF(t *testing.T) {
	h := &memHandler{}
	addr := testServer(t, Config{Timeouts: uniform(10 * time.Second)}, h, ConnInfo{})
	nc, br := dial(t, addr)
	expect(t, br, "220")
	// Pipelined as RFC 2920 allows: EHLO and DATA each end a group.
	nc.Write([]byte("EHLO c\r\n"))
	expect(t, br, "250") // the whole EHLO reply
	nc.Write([]byte("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"))
	for _, want := range []string{"250 2.1.0", "250 2.1.5", "354"} {
		expect(t, br, want)
	}
	nc.Write([]byte("hi\r\n.\r\nQUI"))
	nc.(*net.TCPConn).CloseWrite()
	expect(t, br, "250 2.0.0 Ok: queued as 1")
	if n := len(h.messages()); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

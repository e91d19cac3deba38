package deliver

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/spool"
)

// maxReturnedHeaders caps the original header block copied into a DSN; a
// bounce is no way to return a megabyte of Received lines.
const maxReturnedHeaders = 64 << 10

// dsn is the content of one delivery status notification (RFC 3464).
type dsn struct {
	reportingMTA string          // our host name
	env          *spool.Envelope // the message that failed
	failed       []int           // indices into env.Rcpts
	expired      bool            // given up after queue_lifetime, not on a 5xx
	lifetime     time.Duration   // for the human-readable text
	now          time.Time       // Date and Last-Attempt-Date
	headers      []byte          // the original header block, CRLF lines
}

// readHeaders returns the header block at the start of r, ending in an empty
// line, cut at a line boundary if longer than maxReturnedHeaders.
func readHeaders(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, maxReturnedHeaders))
	var out bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// An overlong line: keep what fits, the rest of it is dropped
			// with the line's remainder.
			out.Write(line)
			out.WriteString("\r\n")
			if _, err := br.ReadString('\n'); err != nil {
				break
			}
			continue
		}
		if err == io.EOF {
			break // truncated or no body: return what there is
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		out.Write(bytes.TrimRight(line, "\r\n"))
		out.WriteString("\r\n")
	}
	return out.Bytes(), nil
}

// write renders the DSN as a complete message, CRLF line endings.
func (d *dsn) write(w io.Writer) error {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)

	h := func(k, v string) { fmt.Fprintf(&buf, "%s: %s\r\n", k, v) }
	h("From", "Mail Delivery System <MAILER-DAEMON@"+d.reportingMTA+">")
	h("To", "<"+sanitizeHeader(d.env.From)+">")
	h("Subject", "Undelivered Mail Returned to Sender")
	h("Date", d.now.Format(time.RFC1123Z))
	h("Message-ID", "<"+d.env.ID+"."+fmt.Sprint(d.now.UnixNano())+"@"+d.reportingMTA+">")
	// RFC 3834: no vacation responder or list should answer a bounce.
	h("Auto-Submitted", "auto-replied")
	h("MIME-Version", "1.0")
	h("Content-Type", `multipart/report; report-type=delivery-status; boundary="`+mw.Boundary()+`"`)
	buf.WriteString("\r\n")
	buf.WriteString("This is a MIME-encapsulated message.\r\n\r\n")

	// The human-readable part.
	part, err := mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":        {"text/plain; charset=utf-8"},
		"Content-Description": {"Notification"},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(part, "This is the mail system at host %s.\r\n\r\n", d.reportingMTA)
	if d.expired {
		fmt.Fprintf(part, "Your message could not be delivered to the recipients below within\r\n%s; the mail system has given up.\r\n\r\n", lifetimeText(d.lifetime))
	} else {
		part.Write([]byte("Your message could not be delivered to the recipients below.\r\nThe failure is permanent.\r\n\r\n"))
	}
	for _, ri := range d.failed {
		rc := d.env.Rcpts[ri]
		fmt.Fprintf(part, "<%s>: %s\r\n", sanitizeHeader(rc.Addr), orNone(rc.Status))
	}

	// The machine-readable part.
	part, err = mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":        {"message/delivery-status"},
		"Content-Description": {"Delivery report"},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(part, "Reporting-MTA: dns; %s\r\n", d.reportingMTA)
	fmt.Fprintf(part, "X-Mxguard-Queue-ID: %s\r\n", d.env.ID)
	if !d.env.Received.IsZero() {
		fmt.Fprintf(part, "Arrival-Date: %s\r\n", d.env.Received.Format(time.RFC1123Z))
	}
	for _, ri := range d.failed {
		rc := d.env.Rcpts[ri]
		status, diag := dsnStatus(rc.Status, d.expired)
		part.Write([]byte("\r\n"))
		fmt.Fprintf(part, "Final-Recipient: %s\r\n", addressType(rc.Addr))
		part.Write([]byte("Action: failed\r\n"))
		fmt.Fprintf(part, "Status: %s\r\n", status)
		if diag != "" {
			fmt.Fprintf(part, "Diagnostic-Code: smtp; %s\r\n", diag)
		}
		fmt.Fprintf(part, "Last-Attempt-Date: %s\r\n", d.now.Format(time.RFC1123Z))
	}

	// The original headers.
	part, err = mw.CreatePart(textproto.MIMEHeader{
		"Content-Type":        {"text/rfc822-headers"},
		"Content-Description": {"Undelivered Message Headers"},
	})
	if err != nil {
		return err
	}
	part.Write(d.headers)
	if err := mw.Close(); err != nil {
		return err
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// dsnStatus derives a DSN's Status and Diagnostic-Code from the last reply
// recorded for a recipient. A recipient given up on after the queue
// lifetime keeps the 4.x.x code of its last failure (Postfix does the
// same), or gets 4.4.7, "delivery time expired".
func dsnStatus(last string, expired bool) (status, diag string) {
	class := 5
	if expired {
		class = 4
	}
	diag = last
	if code, ok := parseCode(prefix(last, 3)); ok && (len(last) == 3 || last[3] == ' ') {
		if enh := enhancedCode(strings.TrimPrefix(last[3:], " "), code/100); enh != "" && code/100 == class {
			return enh, diag
		}
	}
	if expired {
		return "4.4.7", diag
	}
	return "5.0.0", diag
}

func prefix(s string, n int) string {
	if len(s) < n {
		return s
	}
	return s[:n]
}

// addressType renders an address for Final-Recipient: rfc822 when it is
// ASCII, otherwise RFC 6533's utf-8 type with non-ASCII characters as
// \x{HEX}, which keeps the field ASCII.
func addressType(addr string) string {
	addr = sanitizeHeader(addr)
	if isASCII(addr) {
		return "rfc822; " + addr
	}
	var b strings.Builder
	b.WriteString("utf-8; ")
	for _, r := range addr {
		if r < 0x80 {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\x{%X}`, r)
		}
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "no delivery attempt was made"
	}
	return s
}

func lifetimeText(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		n := int(d / (24 * time.Hour))
		if n == 1 {
			return "1 day"
		}
		return fmt.Sprintf("%d days", n)
	}
	return d.String()
}

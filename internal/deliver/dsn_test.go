package deliver

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/spool"
)

// parsedDSN is a DSN taken apart with the standard library's parsers.
type parsedDSN struct {
	header    mail.Header
	human     string
	perMsg    textproto.MIMEHeader
	perRcpt   []textproto.MIMEHeader
	returned  string
	partTypes []string
}

func parseDSN(t *testing.T, raw []byte) parsedDSN {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN does not parse: %v\n%s", err, raw)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q (%v)", msg.Header.Get("Content-Type"), err)
	}
	d := parsedDSN{header: msg.Header}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		d.partTypes = append(d.partTypes, ct)
		switch ct {
		case "text/plain":
			d.human = string(b)
		case "message/delivery-status":
			tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(b, "\r\n\r\n"...))))
			if d.perMsg, err = tr.ReadMIMEHeader(); err != nil {
				t.Fatalf("per-message fields: %v", err)
			}
			for {
				h, err := tr.ReadMIMEHeader()
				if len(h) == 0 {
					break
				}
				if err != nil {
					t.Fatalf("per-recipient fields: %v", err)
				}
				d.perRcpt = append(d.perRcpt, h)
			}
		case "text/rfc822-headers":
			d.returned = string(b)
		}
	}
	return d
}

func TestDSN(t *testing.T) {
	env := &spool.Envelope{
		ID: "Q1", From: "alice@example.net", Received: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Rcpts: []spool.Rcpt{
			{Addr: "bob@example.org", Done: true, Status: "550 5.1.1 <bob@example.org>: unknown user"},
			{Addr: "carol@example.org", Done: true, Status: "250 2.0.0 ok"},
			{Addr: "dave@example.org", Status: "451 4.4.1 connection refused"},
			{Addr: "erin@example.org"},
			{Addr: "jörg@example.org", Status: "554 rejected"},
		},
	}
	headers, err := readHeaders(strings.NewReader(testBody))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 7, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		failed  []int
		expired bool
		status  []string
		diag    []string
		text    string
	}{
		{"permanent", []int{0, 4}, false, []string{"5.1.1", "5.0.0"},
			[]string{"smtp; 550 5.1.1 <bob@example.org>: unknown user", "smtp; 554 rejected"}, "permanent"},
		{"expired", []int{2, 3}, true, []string{"4.4.1", "4.4.7"},
			[]string{"smtp; 451 4.4.1 connection refused", ""}, "within\r\n5 days"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &dsn{reportingMTA: "mx.test", env: env, failed: tt.failed, expired: tt.expired,
				lifetime: 5 * 24 * time.Hour, now: now, headers: headers}
			var buf bytes.Buffer
			if err := d.write(&buf); err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(bytes.ReplaceAll(buf.Bytes(), []byte("\r\n"), nil), []byte("\n")) {
				t.Error("DSN has a bare LF")
			}
			p := parseDSN(t, buf.Bytes())
			if got := p.header.Get("To"); got != "<alice@example.net>" {
				t.Errorf("To: %q", got)
			}
			if got := p.header.Get("Auto-Submitted"); got != "auto-replied" {
				t.Errorf("Auto-Submitted: %q", got)
			}
			if from, err := p.header.AddressList("From"); err != nil || from[0].Address != "MAILER-DAEMON@mx.test" {
				t.Errorf("From: %v %v", from, err)
			}
			if _, err := p.header.Date(); err != nil {
				t.Errorf("Date: %v", err)
			}
			if want := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}; strings.Join(p.partTypes, " ") != strings.Join(want, " ") {
				t.Errorf("parts %q, want %q", p.partTypes, want)
			}
			if got := p.perMsg.Get("Reporting-Mta"); got != "dns; mx.test" {
				t.Errorf("Reporting-MTA: %q", got)
			}
			if got := p.perMsg.Get("Arrival-Date"); got != "Fri, 02 Jan 2026 03:04:05 +0000" {
				t.Errorf("Arrival-Date: %q", got)
			}
			if len(p.perRcpt) != len(tt.failed) {
				t.Fatalf("%d per-recipient blocks, want %d", len(p.perRcpt), len(tt.failed))
			}
			for i, h := range p.perRcpt {
				addr := env.Rcpts[tt.failed[i]].Addr
				want := "rfc822; " + addr
				if addr == "jörg@example.org" {
					want = `utf-8; j\x{F6}rg@example.org`
				}
				if got := h.Get("Final-Recipient"); got != want {
					t.Errorf("Final-Recipient %q, want %q", got, want)
				}
				if got := h.Get("Action"); got != "failed" {
					t.Errorf("Action %q", got)
				}
				if got := h.Get("Status"); got != tt.status[i] {
					t.Errorf("%s: Status %q, want %q", addr, got, tt.status[i])
				}
				if got := h.Get("Diagnostic-Code"); got != tt.diag[i] {
					t.Errorf("%s: Diagnostic-Code %q, want %q", addr, got, tt.diag[i])
				}
				if !strings.Contains(p.human, "<"+addr+">") {
					t.Errorf("human part does not name %s:\n%s", addr, p.human)
				}
			}
			if !strings.Contains(p.human, tt.text) {
				t.Errorf("human part lacks %q:\n%s", tt.text, p.human)
			}
			if p.returned != "From: a@example.org\r\nSubject: test\r\n" {
				t.Errorf("returned headers %q", p.returned)
			}
		})
	}
}

func TestReadHeaders(t *testing.T) {
	long := strings.Repeat("x", 5000)
	tests := []struct{ in, want string }{
		{"A: b\r\nC: d\r\n\r\nbody\r\n", "A: b\r\nC: d\r\n"},
		{"A: b\nC: d\n\nbody\n", "A: b\r\nC: d\r\n"},
		{"A: b\r\n", "A: b\r\n"},
		{"A: b", ""},
		{"", ""},
		{"\r\nbody", ""},
		{"Long: " + long + "\r\nB: c\r\n\r\n", "Long: " + long[:4096-6] + "\r\nB: c\r\n"},
		{strings.Repeat("H: 123456789\r\n", 10000), strings.Repeat("H: 123456789\r\n", maxReturnedHeaders/14)},
	}
	for _, tt := range tests {
		got, err := readHeaders(strings.NewReader(tt.in))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("readHeaders(%.30q) = %.40q (%d), want %.40q (%d)", tt.in, got, len(got), tt.want, len(tt.want))
		}
	}
}

package control

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"192.0.2.0/24", "192.0.2.0/24"},
		{"192.0.2.9/24", "192.0.2.0/24"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{`time=2026-11-25T14:00:00Z level=INFO msg="rejecting connection from host5.adsl.alicedsl.de [127.0.0.5]: ratecontrol: 6 connections" ip=127.0.0.5 reason=ratecontrol`, "127.0.0.5/32"},
		{"Mar 29 10:00:00 mx sendmail[123]: ruleset=check_relay, arg1=[198.51.100.4], relay=[198.51.100.4], reject=421 4.3.2", "198.51.100.4/32"},
		{"rejecting commands from unknown [IPv6:2001:db8::5] due to pre-greeting traffic", "2001:db8::5/128"},
		{"tcpwrappers (host5.adsl.alicedsl.de, 127.0.0.5) rejection", "127.0.0.5/32"},
		{"McAfee: blocked ICMP ping from 169.254.2.1 to port 990", "169.254.2.1/32"},
	}
	for _, tt := range tests {
		p, err := ParseTarget(tt.in)
		if err != nil || p.String() != tt.want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %s", tt.in, p, err, tt.want)
		}
	}
	for _, bad := range []string{"", "no address here", "mail.example.com", "10:30:00"} {
		if p, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) = %v, want error", bad, p)
		}
	}
}

type recorder struct {
	mu      sync.Mutex
	trusted []netip.Prefix
}

func (r *recorder) Trust(p netip.Prefix) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trusted = append(r.trusted, p)
	return "trusted " + p.String(), nil
}
func (r *recorder) Deny(p netip.Prefix) (string, error) { return "", io.ErrUnexpectedEOF }
func (r *recorder) Reload() (string, error)             { return "reloaded", nil }
func (r *recorder) Status() (string, error)             { return "up", nil }

func TestServeAndSend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	rec := &recorder{}
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- Serve(ctx, ln, time.Second, rec, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	out, err := Send(path, "TRUST [127.0.0.9]: something", time.Second)
	if err != nil || out != "trusted 127.0.0.9/32" {
		t.Fatalf("Send = %q, %v", out, err)
	}
	if _, err := Send(path, "DENY 1.2.3.4", time.Second); err == nil {
		t.Fatal("handler error not passed back")
	}
	if _, err := Send(path, "FROB", time.Second); err == nil {
		t.Fatal("unknown command accepted")
	}
	if _, err := Send(filepath.Join(t.TempDir(), "none.sock"), "STATUS", time.Second); err == nil {
		t.Fatal("Send to a missing socket succeeded")
	}
}

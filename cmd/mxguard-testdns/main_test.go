package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func writeZone(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.zone")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRun(t *testing.T) {
	zone := writeZone(t, "$TTL 60\n5.0.0.127.in-addr.arpa. IN PTR host5.adsl.alicedsl.de.\n")
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, zone, "127.0.0.1:0", pw, slog.New(slog.DiscardHandler))
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the ready line: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok {
		t.Fatalf("ready line %q", line)
	}
	go io.Copy(io.Discard, pr) // drain until run returns

	for _, network := range []string{"udp", "tcp"} {
		m := new(dns.Msg)
		m.SetQuestion("5.0.0.127.in-addr.arpa.", dns.TypePTR)
		c := &dns.Client{Net: network, Timeout: 5 * time.Second}
		resp, _, err := c.Exchange(m, addr)
		if err != nil {
			t.Fatalf("query over %s: %v", network, err)
		}
		if len(resp.Answer) != 1 || resp.Answer[0].(*dns.PTR).Ptr != "host5.adsl.alicedsl.de." {
			t.Errorf("answer over %s: %v", network, resp.Answer)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name, zone, listen string
	}{
		{"missing zone file", filepath.Join(t.TempDir(), "missing.zone"), "127.0.0.1:0"},
		{"bad zone file", writeZone(t, "h.example. 60 IN A 999.0.0.1\n"), "127.0.0.1:0"},
		{"bad listen address", writeZone(t, "h.example. 60 IN A 127.0.0.1\n"), "127.0.0.1"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.zone, tt.listen, io.Discard, slog.New(slog.DiscardHandler))
		if err == nil {
			t.Errorf("%s: run succeeded", tt.name)
		}
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// refuser is a server on loopback that answers every connection with 421
// and closes it; it returns its address.
func refuser(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("421 4.3.2 test\r\n"))
			c.Close()
		}
	}()
	return l.Addr().String()
}

func TestRunFloodJSON(t *testing.T) {
	addr := refuser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"-mode", "flood", "-addr", addr, "-c", "2", "-duration", "100ms", "-json"},
		&out, io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Mode    string         `json:"mode"`
		Conns   int            `json:"connections"`
		Replies map[string]int `json:"replies"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %s", err, out.Bytes())
	}
	if got.Mode != "flood" || got.Conns == 0 || got.Replies["421"] != got.Conns {
		t.Errorf("result %s", out.Bytes())
	}
}

func TestRunFloodRateJSON(t *testing.T) {
	addr := refuser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"-mode", "flood", "-addr", addr, "-rate", "200", "-max-outstanding", "50",
		"-duration", "250ms", "-json"}, &out, io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rate    float64        `json:"rate"`
		Conns   int            `json:"connections"`
		Dropped int            `json:"dropped"`
		Replies map[string]int `json:"replies"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %s", err, out.Bytes())
	}
	// 250ms at 200/s: starts at 0, 5, ... 245ms.
	if got.Rate != 200 || got.Conns+got.Dropped != 50 || got.Replies["421"] != got.Conns {
		t.Errorf("result %s", out.Bytes())
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-mode", "nap"},
		{"-bind", "127.0.0.9-127.0.0.1"},
		{"-mode", "idle", "-pid", "1", "-pids", "smtpd"},
		{"-mode", "idle", "-pids", "("},
		{"-mode", "abuse", "-pid", "1", "-pids", "smtpd"},
		{"-mode", "flood", "-rate", "100", "-c", "4"},
		{"-no-such-flag"},
		{"extra"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
		if !errors.As(err, new(usageError)) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestRunAbuseJSON(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// Greets, takes EHLO, then cuts the endless command line
			// as soon as it starts.
			go func() {
				defer c.Close()
				c.Write([]byte("220 hi\r\n"))
				r := bufio.NewReader(c)
				r.ReadString('\n')
				c.Write([]byte("250 hi\r\n"))
				r.ReadByte()
				c.Write([]byte("500 5.5.2 Line too long\r\n"))
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	err = run(ctx, []string{"-mode", "abuse", "-addr", l.Addr().String(), "-conns", "3", "-kind", "command", "-line-max", "1", "-json"},
		&out, io.Discard, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Mode  string `json:"mode"`
		Kinds map[string]struct {
			Clients int            `json:"clients"`
			Cut     int            `json:"cut"`
			Replies map[string]int `json:"replies"`
		} `json:"kinds"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %s", err, out.Bytes())
	}
	if k := got.Kinds["command"]; got.Mode != "abuse" || k.Clients != 3 || k.Cut != 3 || k.Replies["500"] != 3 {
		t.Errorf("result %s", out.Bytes())
	}
}

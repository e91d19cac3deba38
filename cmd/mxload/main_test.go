package main

import (
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

func TestRunFloodJSON(t *testing.T) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	err = run(ctx, []string{"-mode", "flood", "-addr", l.Addr().String(), "-c", "2", "-duration", "100ms", "-json"},
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

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-mode", "nap"},
		{"-bind", "127.0.0.9-127.0.0.1"},
		{"-mode", "idle", "-pid", "1", "-pids", "smtpd"},
		{"-mode", "idle", "-pids", "("},
		{"-no-such-flag"},
		{"extra"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
		if !errors.As(err, new(usageError)) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

package loadgen

import (
	"net"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/smtpsink"
)

func TestFloodRejecting(t *testing.T) {
	srv := startLineServer(t, func(c net.Conn) {
		c.Write([]byte("421 4.3.2 test\r\n"))
	})
	res, err := Flood(testCtx(t), FloodConfig{
		Addr: srv.addr, Concurrency: 4, Duration: 300 * time.Millisecond,
		Bind: mustAddrs(t, "127.0.0.2-127.0.0.9"), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every connection the client finished was accepted first, and the
	// last ones finish before Flood returns: the counts must agree.
	accepted := int(srv.accepted.Load())
	if res.Attempts == 0 || res.Attempts != accepted || res.Replies["421"] != accepted || len(res.Replies) != 1 {
		t.Errorf("attempts %d, replies %v, errors %v; server accepted %d", res.Attempts, res.Replies, res.Errors, accepted)
	}
	if len(res.Errors) != 0 || res.FirstReply.Count != accepted {
		t.Errorf("errors %v, first-reply samples %d", res.Errors, res.FirstReply.Count)
	}
	t.Logf("%d connections, %.0f/s", res.Attempts, res.ConnectionsPerSecond())
}

func TestFloodSink(t *testing.T) {
	s := startSink(t)
	res, err := Flood(testCtx(t), FloodConfig{Addr: s.Addr, Concurrency: 4, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts == 0 || res.Replies["220"] != res.Attempts || len(res.Errors) != 0 {
		t.Errorf("attempts %d, replies %v, errors %v; want a 220 for each", res.Attempts, res.Replies, res.Errors)
	}
}

func TestFloodErrors(t *testing.T) {
	tests := []struct {
		name string
		addr func(t testing.TB) string
		want string
	}{
		{"nobody listening", smtpsink.FreePort, "ECONNREFUSED"},
		{"closed without a reply", func(t testing.TB) string {
			return startLineServer(t, func(net.Conn) {}).addr
		}, "EOF"},
		{"garbage reply", func(t testing.TB) string {
			return startLineServer(t, func(c net.Conn) { c.Write([]byte("hello there\r\n")) }).addr
		}, "protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Flood(testCtx(t), FloodConfig{Addr: tt.addr(t), Concurrency: 2, Duration: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Attempts == 0 || res.Errors[tt.want] != res.Attempts || len(res.Replies) != 0 {
				t.Errorf("attempts %d, errors %v, replies %v; want all %s", res.Attempts, res.Errors, res.Replies, tt.want)
			}
		})
	}
}

func TestFloodOutput(t *testing.T) {
	srv := startLineServer(t, func(c net.Conn) { c.Write([]byte("554 5.7.1 go away\r\n")) })
	res, err := Flood(testCtx(t), FloodConfig{Addr: srv.addr, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkText(t, res, "reply       554: ")
	var got struct {
		Mode    string         `json:"mode"`
		Conns   int            `json:"connections"`
		Replies map[string]int `json:"replies"`
	}
	if b := viaJSON(t, res, &got); got.Mode != "flood" || got.Conns != res.Attempts || got.Replies["554"] != res.Attempts {
		t.Errorf("JSON %s", b)
	}
}

func TestFloodConfigErrors(t *testing.T) {
	for _, cfg := range []FloodConfig{
		{Duration: time.Second},
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:1", Duration: time.Second, Concurrency: -1},
	} {
		if _, err := Flood(testCtx(t), cfg); err == nil {
			t.Errorf("Flood(%+v) succeeded", cfg)
		}
	}
}

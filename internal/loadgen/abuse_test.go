package loadgen

import (
	"bufio"
	"context"
	"github.com/mxguard/mxguard/internal/reply"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/smtpd"
)

// discard is an smtpd.Handler that takes every envelope and reads every
// body to its end.
type discard struct{}

func (discard) Mail(*smtpd.Session, smtpd.Path, int64) *reply.Reply { return nil }
func (discard) Rcpt(*smtpd.Session, smtpd.Path) *reply.Reply        { return nil }
func (discard) Data(_ *smtpd.Session, r io.Reader) *reply.Reply {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil
	}
	return &reply.Reply{Code: 250, Status: "2.0.0", Text: "Ok"}
}

func (discard) Reset(*smtpd.Session) {}
func (discard) Close(*smtpd.Session) {}

// startSMTPD runs mxguard's protocol core on a free loopback port until
// the test ends.
func startSMTPD(t testing.TB, cfg smtpd.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Hostname = "mx.test"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := smtpd.NewServer(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				srv.ServeConn(ctx, nc, smtpd.ConnInfo{Remote: netip.MustParseAddrPort(nc.RemoteAddr().String())}, discard{})
			})
		}
	})
	return ln.Addr().String()
}

// TestAbuseCut: against mxguard's protocol core every kind of abuser is
// cut off with the expected reply, having sent about the limit, and the
// tallies add up.
func TestAbuseCut(t *testing.T) {
	const maxSize = 64 << 10
	addr := startSMTPD(t, smtpd.Config{MaxMessageSize: maxSize, Timeouts: smtpd.Timeouts{
		Command: 5 * time.Second, Helo: 5 * time.Second, Mail: 5 * time.Second, Rcpt: 5 * time.Second,
		DataInit: 5 * time.Second, DataBlock: 5 * time.Second, DataFinal: 5 * time.Second, Rset: 5 * time.Second,
		Quit: 5 * time.Second, Misc: 5 * time.Second, StartTLS: 5 * time.Second,
	}})
	self, err := ParseProcs(strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Abuse(testCtx(t), AbuseConfig{
		Addr: addr, Abusers: 30, Concurrency: 10, Bind: mustAddrs(t, "127.0.0.2-127.0.0.9"),
		MaxSize: maxSize, Cap: 16 << 20, Timeout: 5 * time.Second, Procs: self,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[AbuseKind]string{AbuseHeader: "552", AbuseData: "552", AbuseCommand: "500"}
	for k, reply := range want {
		tl := res.Kinds[k]
		if tl == nil {
			t.Fatalf("no tally for %s", k)
		}
		if tl.Clients != 10 || tl.Cut != 10 || tl.Replies[reply] != 10 || tl.Early+tl.Uncut+tl.Errors != 0 {
			t.Errorf("%s: %+v; want 10 clients cut with %s", k, tl, reply)
		}
		if tl.Sent.Count != 10 || tl.ToCut.Count != 10 || tl.PastLimit.Max != tl.Sent.Max-tl.Limit {
			t.Errorf("%s: samples sent %+v, past limit %+v, to cut %+v", k, tl.Sent, tl.PastLimit, tl.ToCut)
		}
		// Far less than the cap: the server cut them, socket buffers and
		// all, within a few MiB.
		if tl.Sent.Max > tl.Limit+8<<20 {
			t.Errorf("%s: a client sent %d octets with limit %d", k, tl.Sent.Max, tl.Limit)
		}
	}
	if res.ServerCPU == nil || *res.ServerCPU <= 0 {
		t.Errorf("server CPU %v; want this process's, which served them", res.ServerCPU)
	}
	checkText(t, res, "abusers    30 in", "header     10 clients, limit 65536 octets: cut 10", "command    10 clients, limit 4096 octets: cut 10", "reply    552: 10", "limit to close:", "server CPU")
	var got struct {
		Mode  string
		Kinds map[string]struct {
			Cut     int
			Replies map[string]int
			Sent    struct{ Count int } `json:"sent_octets"`
		}
		ServerCPU *float64 `json:"server_cpu_seconds"`
	}
	b := viaJSON(t, res, &got)
	if got.Mode != "abuse" || got.Kinds["data"].Cut != 10 || got.Kinds["data"].Sent.Count != 10 || got.ServerCPU == nil {
		t.Errorf("JSON %s", b)
	}
}

// TestAbuseNotCut: a server that reads on for ever leaves every client
// uncut at the cap; one that stops reading leaves them stalled.
func TestAbuseNotCut(t *testing.T) {
	reader := func(read bool) func(net.Conn) {
		return func(c net.Conn) {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			io.WriteString(c, "220 hi\r\n")
			if _, err := r.ReadString('\n'); err != nil { // EHLO
				return
			}
			io.WriteString(c, "250 hi\r\n")
			if read {
				io.Copy(io.Discard, r)
			} else {
				time.Sleep(2 * time.Second)
			}
		}
	}
	for _, tt := range []struct {
		name string
		read bool
		want string
	}{{"reads on", true, "cap"}, {"stops reading", false, "timeout"}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startLineServer(t, reader(tt.read))
			// Far more than the socket buffers hold while nobody reads.
			res, err := Abuse(testCtx(t), AbuseConfig{
				Addr: srv.addr, Abusers: 2, Kinds: []AbuseKind{AbuseCommand}, Cap: 64 << 20, Timeout: 500 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			tl := res.Kinds[AbuseCommand]
			if tl.Uncut != 2 || tl.Cut+tl.Early+tl.Errors != 0 || tl.ErrorKinds[tt.want] != 2 || tl.Sent.Count != 0 {
				t.Errorf("%+v; want 2 not cut, by %s", tl, tt.want)
			}
		})
	}
}

// TestAbuseRefused: clients refused before they can abuse count as errors,
// by reply and step.
func TestAbuseRefused(t *testing.T) {
	srv := startLineServer(t, func(c net.Conn) { io.WriteString(c, "421 4.3.2 go away\r\n") })
	res, err := Abuse(testCtx(t), AbuseConfig{Addr: srv.addr, Abusers: 3, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range AbuseKinds {
		if tl := res.Kinds[k]; tl.Errors != 1 || tl.ErrorKinds["421 at CONNECT"] != 1 {
			t.Errorf("%s: %+v", k, tl)
		}
	}
}

func TestAbuseConfigErrors(t *testing.T) {
	for _, cfg := range []AbuseConfig{
		{},
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:1", Abusers: 1, Concurrency: -1},
		{Addr: "127.0.0.1:1", Abusers: 1, Cap: -1},
		{Addr: "127.0.0.1:1", Abusers: 1, Kinds: []AbuseKind{"slowloris"}},
	} {
		if _, err := Abuse(context.Background(), cfg); err == nil {
			t.Errorf("Abuse(%+v) succeeded", cfg)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		data string
		want int64
		err  bool
	}{
		{"812 (mxguard) S 1 812 812 0 -1 4194560 1 0 0 0 150 25 3 4 20 0 9 0 1 1 1", 182, false},
		{"9 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15", 11 + 12 + 13 + 14, false},
		{"9 (x) S 1 2 3", 0, true},
		{"9 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15", 0, true},
		{"9 (x) S 1 2 3 4 5 6 7 8 9 10 -11 12 13 14 15", 0, true},
	}
	for _, tt := range tests {
		got, err := parseStatCPU([]byte(tt.data))
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseStatCPU(%q) = %d, %v; want %d, error %v", tt.data, got, err, tt.want, tt.err)
		}
	}
}

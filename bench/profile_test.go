// Package bench holds the in-process benchmarks that profile the paths
// bench/run.sh measures against Postfix: a whole mxguard server (package
// server, with its real spool and Maildir on disk) driven over loopback by
// package loadgen in the same process, so that
//
//	go test -run '^$' -bench . -cpuprofile cpu.out ./bench/
//	go tool pprof -top cpu.out
//
// shows where a rejected connection or a durable message spends its time,
// with Go's own stack attribution (perf stops at goroutine stack switches).
// The figures are lower than run.sh's: client and server share the process.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/dnstest"
	"github.com/mxguard/mxguard/internal/loadgen"
	"github.com/mxguard/mxguard/internal/server"
)

// startServer runs mxguard on a free loopback port with the given access
// map and extra top-level TOML, logging as mxguard serve does (text to a
// file, since each rejection's log line is part of its cost), and returns
// its address and data directory.
func startServer(tb testing.TB, access, extra string, opts ...server.Option) (addr, dataDir string) {
	tb.Helper()
	dir := tb.TempDir()
	dataDir = filepath.Join(dir, "data")
	accessPath := filepath.Join(dir, "access")
	if err := os.WriteFile(accessPath, []byte(access), 0o600); err != nil {
		tb.Fatal(err)
	}
	// Reverse lookups go to a DNS server on loopback, as in run.sh, never
	// to the system's: the client has no name there (NXDOMAIN).
	dns := dnstest.Start(tb, "bench.test. 3600 IN A 127.0.0.1")
	toml := fmt.Sprintf(`hostname = "mxguard.bench.localhost"
listen = ["127.0.0.1:0"]
data_dir = %q
local_domains = ["bench.test"]
access_map = %q
resolver = %q
%s
[recipients]
catch_all = true
`, dataDir, accessPath, dns.Addr, extra)
	cfgPath := filepath.Join(dir, "mxguard.toml")
	if err := os.WriteFile(cfgPath, []byte(toml), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		tb.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "mxguard.log"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { logFile.Close() })
	srv, err := server.New(cfg, slog.New(slog.NewTextHandler(logFile, nil)), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("server: %v", err)
		}
	})
	return srv.Addrs()[0].String(), dataDir
}

// BenchmarkFloodReject is the cost of one connection from a client over its
// ClientRate: accept, admission, the 421, close. The client is not trusted
// (trusted_networks is empty) and may connect once a minute, so every
// connection after the first is refused, as in run.sh's flood.
//
// The sub-benchmarks show what the metrics cost a refused connection: with
// them (as served) and without (server.WithoutMetrics).
//
// console=closed is metrics=on with the web console configured on the
// admin listener but not open in any browser: what the console costs a
// refused connection when nobody looks (nothing, by design).
func BenchmarkFloodReject(b *testing.B) {
	const console = "[admin]\nlisten = \"127.0.0.1:0\"\nconsole = true\nconsole_token = \"bench-token-0123456789\"\n"
	for _, m := range []struct {
		name  string
		extra string
		opts  []server.Option
	}{{"metrics=on", "", nil}, {"metrics=off", "", []server.Option{server.WithoutMetrics()}}, {"console=closed", console, nil}} {
		b.Run(m.name, func(b *testing.B) { floodReject(b, m.extra, m.opts...) })
	}
}

func floodReject(b *testing.B, extra string, opts ...server.Option) {
	addr, _ := startServer(b, "ClientRate:\t1\n", "trusted_networks = []\n"+extra, opts...)
	d := net.Dialer{Timeout: 5 * time.Second}
	buf := make([]byte, 512)
	var refused int
	b.ReportAllocs()
	for b.Loop() {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.ReadAtLeast(c, buf, 3)
		if err != nil && !errors.Is(err, io.EOF) {
			b.Fatal(err)
		}
		if n >= 3 && string(buf[:3]) == "421" {
			refused++
		}
		// A reset rather than FIN, as loadgen's flood does, so that
		// b.N connections leave nothing in TIME_WAIT.
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	if refused < b.N-1 {
		b.Fatalf("%d of %d connections refused, want all but the first", refused, b.N)
	}
}

// BenchmarkDurableAccept is run.sh's durable workload in one process: 20
// concurrent sessions, one 1 KiB message each, timed until every message
// is in the Maildir. ns/op is per message.
func BenchmarkDurableAccept(b *testing.B) {
	addr, dataDir := startServer(b, "", `trusted_networks = ["127.0.0.1/32"]`+"\n")
	b.ReportAllocs()
	b.ResetTimer()
	res, err := loadgen.Send(context.Background(), loadgen.SendConfig{
		Addr: addr, Concurrency: 20, Messages: b.N, Size: 1024, MsgsPerConn: 1,
		From: "load@client.test", To: "user@bench.test",
		MaildirDir: filepath.Join(dataDir, "mail"), MaildirExpect: b.N, MaildirTimeout: 5 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	if res.Accepted != b.N || res.Delivery == nil || !res.Delivery.Complete {
		b.Fatalf("accepted %d of %d, delivery %+v", res.Accepted, b.N, res.Delivery)
	}
	b.ReportMetric(float64(b.N)/res.Delivery.After.Seconds(), "delivered/s")
}

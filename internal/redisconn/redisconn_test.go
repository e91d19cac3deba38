package redisconn

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"nothing", Options{}, "none of redis, sentinel or cluster"},
		{"redis and sentinel", Options{Redis: "h:1", Sentinel: []string{"h:2"}, MasterName: "m"}, "redis and sentinel are set: set only one"},
		{"all three", Options{Redis: "h:1", Sentinel: []string{"h:2"}, MasterName: "m", Cluster: []string{"h:3"}}, "redis and sentinel and cluster are set"},
		{"sentinel without master_name", Options{Sentinel: []string{"h:2"}}, "sentinel is set without master_name"},
		{"master_name alone", Options{Redis: "h:1", MasterName: "m"}, "master_name is set without sentinel"},
		{"sentinel_password alone", Options{Cluster: []string{"h:3"}, SentinelPassword: "pw"}, "sentinel_password is set without sentinel"},
		{"bad URL", Options{Redis: "http://h:1/"}, "redis URL"},
		{"password stays out", Options{Redis: "redis://:hunter2@h:1/x"}, "redis URL"},
		{"negative timeout", Options{Redis: "h:1", Timeout: -time.Second}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.opts)
			if err == nil {
				c.Close()
				t.Fatalf("no error, want one with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q, want one with %q (and no password)", err, tc.want)
			}
		})
	}
}

// TestOneServer: host:port and a URL reach the same server, the URL's
// database included.
func TestOneServer(t *testing.T) {
	addr := redistest.Start(t)
	ctx := context.Background()
	for _, v := range []string{addr, "redis://" + addr + "/2"} {
		c, err := New(Options{Redis: v})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctx, "k", v, 0).Err(); err != nil {
			t.Errorf("%s: SET: %v", v, err)
		}
		c.Close()
	}
	db2 := redis.NewClient(&redis.Options{Addr: addr, DB: 2, DisableIdentity: true})
	defer db2.Close()
	if got, err := db2.Get(ctx, "k").Result(); err != nil || got != "redis://"+addr+"/2" {
		t.Errorf("database 2 holds %q, %v", got, err)
	}
}

// TestBoundedWaits: whichever kind of Redis, one that accepts connections
// and never answers (a hung server, a network that drops replies) costs a
// call about Timeout, not the caller's whole deadline: a connection must
// never stall on the shared counters.
func TestBoundedWaits(t *testing.T) {
	t.Parallel()
	hung := hungServer(t)
	const timeout = 200 * time.Millisecond
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"redis", Options{Redis: hung}},
		{"sentinel", Options{Sentinel: []string{hung}, MasterName: "m"}},
		{"cluster", Options{Cluster: []string{hung}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Timeout = timeout
			c, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			err = c.Ping(ctx).Err()
			took := time.Since(start)
			t.Logf("PING to a hung %s: %v after %v", tc.name, err, took.Round(time.Millisecond))
			// A read timeout, one retry, and a loaded machine's margin.
			if err == nil || took > 10*timeout {
				t.Errorf("PING = %v after %v, want an error within %v", err, took, 10*timeout)
			}
		})
	}
}

// hungServer accepts connections and reads them, and never answers.
func hungServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// TestLogger: go-redis's lines reach slog at debug level, once prefixed.
func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l := Logger{Log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts", 1)
	l.Printf(context.Background(), "sentinel: new master=%q", "mx")
	got := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="redis: connection pool: failed to dial after 1 attempts"`,
		`level=DEBUG msg="redis: sentinel: new master=\"mx\""`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s:\n%s", want, got)
		}
	}
}
